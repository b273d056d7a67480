"""Which failed jobs the server runs again: rules keyed on the error source and code.

A failed job without a task is cloned for another attempt only when an error it carries is one
a new attempt can fix: the pilot lost its heartbeat, the job was never picked up, the worker
or the pilot was killed under it, stage-in or stage-out trouble. A payload that exits non-zero
is final: running it again gives the same answer and costs a slot. The defaults follow the real
server's choices (its Watcher fails lost-heartbeat jobs for a retry, its retryJob retries
signal kills and the codes the pilot itself marks recoverable by sending them negative).

Operators replace the defaults with a JSON file named by the ``retry_rules`` setting: a list of
``{"name", "source", "codes", "action"}`` objects, with optional ``labels`` (prodSourceLabels
it applies to) and ``below_attempt`` (only while attemptNr is lower). ``codes`` is a list of
integers, ``"*"`` (any non-zero code) or ``"negative"`` (any code below zero). Rules are read in
order; the first whose source holds a matching code decides. No matching rule means no retry.
The file is checked when the server starts (the runtime loads it: ``Runtime.retry_rules``), so a
typo stops it with a message instead of silently retrying everything or nothing. A settings file rather than a table: the rules are
deployment configuration, reviewed and versioned with the rest of it, identical on every node,
and must be valid before the server takes any traffic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Job columns a rule may look at, in the order a failure's cause is usually most precise.
SOURCES = (
    "pilotErrorCode",
    "exeErrorCode",
    "supErrorCode",
    "ddmErrorCode",
    "brokerageErrorCode",
    "jobDispatcherErrorCode",
    "taskBufferErrorCode",
    "transExitCode",
)
ACTIONS = ("retry", "no_retry")


class RetryRuleError(ValueError):
    """A retry-rule file that cannot be used; the message names the rule and field."""


@dataclass(frozen=True)
class RetryRule:
    """One rule: for ``source`` holding one of ``codes``, do ``action``."""

    name: str
    source: str
    codes: frozenset[int] | str
    action: str
    labels: frozenset[str] | None = None
    below_attempt: int | None = None

    def matches(self, job: Mapping[str, Any]) -> bool:
        """Whether the job's error in this rule's source is one of the rule's codes."""
        try:
            code = int(job.get(self.source) or 0)
        except (TypeError, ValueError):
            return False
        if code == 0:
            return False
        if self.labels is not None and job.get("prodSourceLabel") not in self.labels:
            return False
        if self.below_attempt is not None and (job.get("attemptNr") or 0) >= self.below_attempt:
            return False
        if self.codes == "*":
            return True
        if self.codes == "negative":
            return code < 0
        return isinstance(self.codes, frozenset) and code in self.codes


def _rule(index: int, raw: Any) -> RetryRule:
    where = f"retry rule {index + 1}"
    if not isinstance(raw, Mapping):
        raise RetryRuleError(f"{where}: must be an object")
    unknown = set(raw) - {"name", "source", "codes", "action", "labels", "below_attempt", "note"}
    if unknown:
        raise RetryRuleError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > 60:
        raise RetryRuleError(f"{where}: name must be a text of 1-60 characters")
    where = f"retry rule {name!r}"
    source = raw.get("source")
    if source not in SOURCES:
        raise RetryRuleError(f"{where}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise RetryRuleError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    codes_raw = raw.get("codes")
    codes: frozenset[int] | str
    if codes_raw in ("*", "negative"):
        codes = str(codes_raw)
    elif (
        isinstance(codes_raw, list)
        and codes_raw
        and all(isinstance(c, int) and not isinstance(c, bool) for c in codes_raw)
    ):
        codes = frozenset(codes_raw)
    else:
        raise RetryRuleError(f'{where}: codes must be a non-empty list of integers, "*" or "negative"')
    labels = raw.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise RetryRuleError(f"{where}: labels must be a list of prodSourceLabels")
    below = raw.get("below_attempt")
    if below is not None and (not isinstance(below, int) or isinstance(below, bool) or below < 1):
        raise RetryRuleError(f"{where}: below_attempt must be a positive integer")
    return RetryRule(name, source, codes, action, frozenset(labels) if labels is not None else None, below)


def parse_rules(raw: Any) -> tuple[RetryRule, ...]:
    """Rules from their JSON form (a list of objects); raises RetryRuleError naming the fault."""
    if not isinstance(raw, list):
        raise RetryRuleError("retry rules must be a JSON list of rule objects")
    rules = tuple(_rule(i, r) for i, r in enumerate(raw))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RetryRuleError("retry rule names must be unique")
    return rules


#: The defaults, in the file format (``pandawms`` shows them; operators start from a copy).
DEFAULT_RULES_JSON: list[dict[str, Any]] = [
    {
        "name": "killed-by-panda",
        "source": "pilotErrorCode",
        "codes": [1144],
        "action": "no_retry",
        "note": "the job was killed on request (PANDAKILL)",
    },
    {
        "name": "pilot-says-recoverable",
        "source": "pilotErrorCode",
        "codes": "negative",
        "action": "retry",
        "note": "the pilot sends a recoverable error's code negated",
    },
    {
        "name": "pilot-killed",
        "source": "pilotErrorCode",
        "codes": [1200, 1201, 1213],
        "action": "retry",
        "below_attempt": 2,
        "note": "KILLSIGNAL, SIGTERM, REACHEDMAXTIME: the pilot was killed, not the payload",
    },
    {
        "name": "stage-in-or-out-trouble",
        "source": "pilotErrorCode",
        "codes": [1098, 1099, 1135, 1136, 1137, 1141, 1152, 1181],
        "action": "retry",
        "note": "no local space, stage-in failed, the pilot's recoverable stage-out errors",
    },
    {
        "name": "lost-heartbeat",
        "source": "jobDispatcherErrorCode",
        "codes": [100, 102],
        "action": "retry",
        "note": "the pilot stopped reporting, or never picked the job up",
    },
    {
        "name": "worker-ended-under-job",
        "source": "taskBufferErrorCode",
        "codes": [300],
        "action": "retry",
        "note": "Harvester saw the batch job end while the job was running",
    },
]
DEFAULT_RULES: tuple[RetryRule, ...] = parse_rules(DEFAULT_RULES_JSON)


def load_rules(path: str) -> tuple[RetryRule, ...]:
    """The rules of the JSON file ``path`` (the defaults when ``path`` is empty)."""
    if not path:
        return DEFAULT_RULES
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise RetryRuleError(f"cannot read the retry rules {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RetryRuleError(f"the retry rules {path} are not valid JSON: {exc}") from None
    return parse_rules(raw)


def decide(job: Mapping[str, Any], rules: Sequence[RetryRule]) -> RetryRule | None:
    """The first of ``rules`` that matches the failed job, or None (then it is not retried)."""
    for rule in rules:
        if rule.matches(job):
            return rule
    return None
