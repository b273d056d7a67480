"""Checking the monitor's query parameters: every value is parsed here or refused with a 400.

The pages put user-supplied values back into HTML and SQL; parsing them into typed values first
(a known status, a queue-name-shaped string, a bounded integer, a datetime) means nothing else
has to trust them, and a typo gets a message naming the parameter instead of an empty page.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

from pandawms.model.errors import Invalid
from pandawms.model.states import JobStatus
from pandawms.monitor.queries.jobs import JobFilter

_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_USER_BAD = re.compile(r"[\x00-\x1f\x7f]")
STATUSES = tuple(s.value for s in JobStatus)
JOB_PARAMS = (
    "status",
    "queue",
    "task",
    "user",
    "hours",
    "since",
    "until",
    "table",
    "before",
    "after",
    "limit",
)
MAX_LIMIT = 500


class BadParam(Invalid, ValueError):
    """A query parameter the monitor cannot use; the message says which and why."""


Query = Mapping[str, list[str]]


def check_known(query: Query, allowed: Iterable[str]) -> None:
    """Refuse parameters the page does not take (``format`` is always allowed)."""
    known = set(allowed) | {"format"}
    unknown = sorted(k for k in query if k not in known)
    if unknown:
        raise BadParam(
            f"unknown parameter(s): {', '.join(unknown)}; this page takes: {', '.join(sorted(known))}"
        )


def one(query: Query, name: str) -> str | None:
    """The single value of ``name`` (None or '' when absent/empty); refuses repeats."""
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1 and name != "status":
        raise BadParam(f"{name} given {len(values)} times; give it once")
    value = values[-1].strip()
    return value or None


def integer(query: Query, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """An integer within [low, high]."""
    raw = one(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadParam(f"{name} must be between {low} and {high}, got {value}")
    return value


def timestamp(query: Query, name: str) -> dt.datetime | None:
    """An ISO date or datetime (UTC unless it names an offset), as naive UTC."""
    raw = one(query, name)
    if raw is None:
        return None
    text = raw.replace("Z", "+00:00") if raw.endswith("Z") else raw
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadParam(
            f"{name} must be an ISO date or time like 2024-05-01T12:00, got {raw[:40]!r}"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def statuses(query: Query) -> tuple[str, ...]:
    """Job statuses from ``status=a,b`` and/or repeated ``status``."""
    out: list[str] = []
    for raw in query.get("status", []):
        for item in raw.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item not in STATUSES:
                raise BadParam(f"status {item[:40]!r} is not a job status; use one of {', '.join(STATUSES)}")
            if item not in out:
                out.append(item)
    return tuple(out)


def queue_name(value: str | None, name: str = "queue") -> str | None:
    """A queue name as CRIC spells them."""
    if value is None:
        return None
    if not _QUEUE.match(value):
        raise BadParam(f"{name} {value[:60]!r} is not a valid queue name")
    return value


def user_name(value: str | None) -> str | None:
    """A prodUserName: any printable text up to 128 characters."""
    if value is None:
        return None
    if len(value) > 128 or _USER_BAD.search(value):
        raise BadParam("user must be at most 128 printable characters")
    return value


def job_filter(query: Query) -> JobFilter:
    """The job-list filters and page of ``query``."""
    check_known(query, JOB_PARAMS)
    hours = integer(query, "hours", 1, 24 * 90)
    since = timestamp(query, "since")
    until = timestamp(query, "until")
    if hours is not None and since is not None:
        raise BadParam("give hours or since, not both")
    if hours is not None:
        since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=hours)
    if since and until and since >= until:
        raise BadParam("since must be before until")
    table = one(query, "table") or "live"
    if table not in ("live", "archive", "all"):
        raise BadParam(f"table must be live, archive or all, got {table[:20]!r}")
    before = integer(query, "before", 1, 2**63 - 1)
    after = integer(query, "after", 0, 2**63 - 1)
    if before is not None and after is not None:
        raise BadParam("give before or after, not both")
    return JobFilter(
        statuses=statuses(query),
        queue=queue_name(one(query, "queue")),
        task=integer(query, "task", 0, 2**63 - 1),
        user=user_name(one(query, "user")),
        since=since,
        until=until,
        table=table,
        before=before,
        after=after,
        limit=integer(query, "limit", 1, MAX_LIMIT, 50) or 50,
    )


def want_json(query: Query) -> bool:
    """``format=json`` asks for the page's JSON; ``format=html`` (or nothing) for the page."""
    value = one(query, "format")
    if value is None or value == "html":
        return False
    if value == "json":
        return True
    raise BadParam(f"format must be html or json, got {value[:20]!r}")
