"""Binding a dispatched job to the credential that took it.

PandaIDs are small increasing numbers that anyone can probe with getStatus, so a pilot
credential alone must not be enough to report on any job: whoever holds one could fail every
running job of the system. Dispatch therefore records, on the job row, who took it
(``dispatchDN``: the caller's owner DN, proxy CNs removed; ``dispatchRole``: ``production`` or
``pilot``; ``dispatchNode``: the node the pilot named). In strict mode a per-job pilot call
(updateJob, pilot/update_job, the bulk forms, getEventRanges) is accepted only from

* the identity that took the job, or
* any production identity, when the job was taken under a production credential: Harvester
  instances and their pilots run with the production credential and report for many workers,
* anyone, for a job with no ``dispatchDN`` (dispatched before this check existed, or in open
  mode); an activated job has none either, and no pilot report can move an activated job.

Everyone else gets a 403 with StatusCode 70. The check costs nothing on the hot path: the
heartbeat statement carries it in its WHERE clause, and the full path compares the columns of
the row it already reads and locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, or_, select

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs
from pandawms.model.errors import Forbidden, StatusCode
from pandawms.model.identity import Identity

PRODUCTION = "production"
PILOT = "pilot"

#: Columns a binding check reads from the job row.
COLUMNS = ("dispatchDN", "dispatchRole")


@dataclass(frozen=True)
class Caller:
    """The credential of a per-job pilot call, as binding compares it."""

    owner: str
    production: bool

    @property
    def kind(self) -> str:
        """``production`` or ``pilot``: the statement variant the heartbeat path uses."""
        return PRODUCTION if self.production else PILOT


class NotDispatchedToYou(Forbidden):
    """A pilot call about a job that another credential took."""

    def __init__(self, panda_id: int) -> None:
        super().__init__(
            f"PandaID={panda_id} was dispatched to another credential; "
            "only the pilot that got the job (or production for production-dispatched jobs) may report on it",
            code=StatusCode.PERMS,
        )


def caller_for(rt: Runtime, who: Identity) -> Caller | None:
    """The binding of ``who``'s pilot calls; None (no check) when the server runs open."""
    if rt.settings.auth_mode != "strict":
        return None
    return Caller(who.owner, who.is_production)


def dispatch_values(who: Identity) -> dict[str, Any]:
    """What dispatch writes on the jobs it hands to ``who`` (the node is written per request)."""
    return {
        "dispatchDN": who.owner[:250] or None,
        "dispatchRole": (PRODUCTION if who.is_production else PILOT) if who.owner else None,
    }


def may_report(job: Mapping[str, Any], caller: Caller | None) -> bool:
    """Whether ``caller`` may report on ``job`` (a row holding :data:`COLUMNS`)."""
    if caller is None:
        return True
    taken_by = job.get("dispatchDN")
    if not taken_by:
        return True
    if taken_by == caller.owner[:250]:
        return True
    return caller.production and job.get("dispatchRole") == PRODUCTION


def check(job: Mapping[str, Any], caller: Caller | None) -> None:
    """Raise :class:`NotDispatchedToYou` unless :func:`may_report`."""
    if not may_report(job, caller):
        raise NotDispatchedToYou(int(job["PandaID"]))


def where_clause(kind: str) -> ColumnElement[bool]:
    """The binding as SQL, for statements that update without reading first.

    Binds ``bind_owner``; ``kind`` is :attr:`Caller.kind`.
    """
    allowed = [jobs.c.dispatchDN.is_(None), jobs.c.dispatchDN == bindparam("bind_owner")]
    if kind == PRODUCTION:
        allowed.append(jobs.c.dispatchRole == PRODUCTION)
    return or_(*allowed)


def require_bound(rt: Runtime, panda_id: int, who: Identity) -> None:
    """For per-job pilot calls that do not otherwise read the job (getEventRanges)."""
    caller = caller_for(rt, who)
    if caller is None:
        return
    with read_tx(rt.engine) as conn:
        row = (
            conn.execute(
                select(jobs.c.PandaID, *[jobs.c[c] for c in COLUMNS]).where(jobs.c.PandaID == panda_id)
            )
            .mappings()
            .first()
        )
    if row is not None:
        check(dict(row), caller)
