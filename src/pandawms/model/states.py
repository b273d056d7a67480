"""Job states and the allowed moves between them: the one table every status change obeys.

A lost heartbeat, a kill, a reassign and a retry are all moves here; code elsewhere never
writes ``jobStatus`` without asking :func:`check_move` first.
"""

from __future__ import annotations

from enum import StrEnum

from pandawms.model.errors import Conflict


class JobStatus(StrEnum):
    """The statuses a PanDA job can have, with their wire spelling."""

    PENDING = "pending"
    DEFINED = "defined"
    ASSIGNED = "assigned"
    WAITING = "waiting"
    THROTTLED = "throttled"
    ACTIVATED = "activated"
    SENT = "sent"
    STARTING = "starting"
    RUNNING = "running"
    HOLDING = "holding"
    MERGING = "merging"
    TRANSFERRING = "transferring"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CLOSED = "closed"


S = JobStatus

#: Final states: a job here never changes status again (a retry is a new PandaID).
TERMINAL: frozenset[JobStatus] = frozenset({S.FINISHED, S.FAILED, S.CANCELLED, S.CLOSED})

#: States in which a pilot holds the job and must heartbeat.
PILOT_STATES: frozenset[JobStatus] = frozenset({S.SENT, S.STARTING, S.RUNNING, S.HOLDING, S.TRANSFERRING})

#: States a pilot may report in updateJob.
PILOT_REPORTABLE: frozenset[str] = frozenset(
    {"starting", "running", "holding", "transferring", "finished", "failed"}
)

_ENDINGS = (S.FAILED, S.CANCELLED, S.CLOSED)

#: from-status -> statuses it may move to.
ALLOWED_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset({S.DEFINED, *_ENDINGS}),
    S.DEFINED: frozenset({S.ASSIGNED, S.ACTIVATED, S.WAITING, S.PENDING, *_ENDINGS}),
    S.ASSIGNED: frozenset({S.ACTIVATED, S.WAITING, S.DEFINED, *_ENDINGS}),
    S.WAITING: frozenset({S.DEFINED, S.ASSIGNED, S.ACTIVATED, *_ENDINGS}),
    S.THROTTLED: frozenset({S.ACTIVATED, S.DEFINED, *_ENDINGS}),
    S.ACTIVATED: frozenset({S.SENT, S.THROTTLED, S.DEFINED, *_ENDINGS}),
    S.SENT: frozenset({S.STARTING, S.RUNNING, S.HOLDING, S.TRANSFERRING, *_ENDINGS}),
    S.STARTING: frozenset({S.RUNNING, S.HOLDING, S.TRANSFERRING, *_ENDINGS}),
    S.RUNNING: frozenset({S.HOLDING, S.TRANSFERRING, *_ENDINGS}),
    S.TRANSFERRING: frozenset({S.HOLDING, S.FINISHED, *_ENDINGS}),
    S.HOLDING: frozenset({S.TRANSFERRING, S.MERGING, S.FINISHED, *_ENDINGS}),
    S.MERGING: frozenset({S.FINISHED, *_ENDINGS}),
    S.FINISHED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.CLOSED: frozenset(),
}


class IllegalMove(Conflict, ValueError):
    """A status change the table does not allow; the caller must leave the job untouched.

    Also a ValueError, as callers that probe a move with ``except ValueError`` expect.
    """

    def __init__(self, panda_id: int | None, old: str, new: str) -> None:
        self.panda_id, self.old, self.new = panda_id, old, new
        who = f"job {panda_id}" if panda_id is not None else "job"
        super().__init__(f"{who} cannot move from {old} to {new}")


def is_allowed(old: str, new: str) -> bool:
    """True when a job in status ``old`` may move to ``new``."""
    try:
        return JobStatus(new) in ALLOWED_MOVES[JobStatus(old)]
    except ValueError:
        return False


def check_move(old: str, new: str, panda_id: int | None = None) -> None:
    """Raise :class:`IllegalMove` unless ``old -> new`` is in the table."""
    if not is_allowed(old, new):
        raise IllegalMove(panda_id, old, new)
