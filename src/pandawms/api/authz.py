"""Who may call what: the access rules, and their check.

A rule says whether a method needs a secure identity (HTTPS client certificate, a trusted front
end's DN, or a verified token), which roles may call it, and whether it changes state (then it
is audited). Each API method names its rule where it is declared (the v1 and legacy registries'
decorators), so a method and its rule are read and reviewed together; the pages outside the
APIs have theirs in :data:`PATH_RULES`. Ownership (a user acting only on their own jobs) is
checked where the targets are known, in the core. ``open`` mode skips these checks; ``strict``
mode enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pandawms.model.errors import Forbidden, StatusCode, Unauthenticated
from pandawms.model.identity import Identity


@dataclass(frozen=True)
class Rule:
    """Access rule of one method."""

    secure: bool
    roles: frozenset[str] = frozenset()
    audit: bool = False


ANYONE = Rule(secure=False)
#: Any secure identity, whatever its roles (the caller's own attributes, for debugging).
SECURE = Rule(secure=True)
USER = Rule(secure=True, roles=frozenset({"user"}))
USER_WRITE = Rule(secure=True, roles=frozenset({"user"}), audit=True)
PILOT = Rule(secure=True, roles=frozenset({"pilot"}))
PILOT_WRITE = Rule(secure=True, roles=frozenset({"pilot"}), audit=True)
PRODUCTION_WRITE = Rule(secure=True, roles=frozenset({"production"}), audit=True)
#: Secrets are read by their owner: a user (pbook) or a pilot (its own broker credentials).
SECRETS_OWNER = Rule(secure=True, roles=frozenset({"user", "pilot"}))
#: Harvester instances run with a production credential. A pilot's credential (on every worker
#: node) must not report workers or take commands for an instance: it could fail any job.
HARVESTER = Rule(secure=True, roles=frozenset({"production"}))

#: What a name without a declared rule gets: :func:`check` refuses it whoever calls.
#: Audited, so that a call in open mode (where nothing is checked) leaves a trace.
NO_RULE = Rule(secure=True, audit=True)

#: Pages and files outside the APIs.
PATH_RULES: dict[str, Rule] = {"monitor": USER, "metrics": ANYONE, "cache": ANYONE, "health": ANYONE}

_SECURE_METHODS = ("x509", "header", "token")


def check(rule: Rule, who: Identity, what: str) -> None:
    """Raise unless ``who`` may call a method with ``rule``.

    :data:`NO_RULE` (a name with no declared rule) is always refused: a missing rule is a
    programming error that the architecture test catches, never a reason to guess one.
    """
    if rule is NO_RULE:
        raise Forbidden(f"{what}: no access rule")
    if rule.secure and who.method not in _SECURE_METHODS:
        raise Unauthenticated(
            f"{what} needs a secure identity: HTTPS with a grid certificate or proxy, or an OIDC token"
        )
    if rule.roles and not (rule.roles & who.roles):
        if "pilot" in rule.roles:
            raise Forbidden(f"{what}: production or pilot role required", code=StatusCode.ROLE)
        raise Forbidden(f"{what}: role {' or '.join(sorted(rule.roles))} required")
