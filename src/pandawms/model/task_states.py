"""Task states and the allowed moves between them: the one table every task status change obeys.

A task (what prun, pathena and phpo submit) is registered, defined (its datasets and files
made), staging (input only on tape, waiting for the data carousel to bring it to disk), ready
(files waiting for jobs), running (jobs made), and ends done (every input file
processed), finished (some) or failed (none); broken when its parameters cannot be turned into
work at all, aborted when killed. ``finishing`` and ``aborting`` hold a task until the jobs it
still has end, so that a task is final only once all its jobs are. ``paused`` stops job
generation until resumed; ``exhausted`` is a task that cannot make progress on its own (no
queue takes its jobs) and waits for the user to retry it.
"""

from __future__ import annotations

from enum import StrEnum

from pandawms.model.errors import Conflict


class TaskStatus(StrEnum):
    """Task statuses with their wire spelling (JEDI's names)."""

    REGISTERED = "registered"
    DEFINED = "defined"
    STAGING = "staging"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    EXHAUSTED = "exhausted"
    FINISHING = "finishing"
    ABORTING = "aborting"
    DONE = "done"
    FINISHED = "finished"
    FAILED = "failed"
    BROKEN = "broken"
    ABORTED = "aborted"


T = TaskStatus

#: Final statuses: only a user command (retry, reactivate) brings such a task back.
FINAL: frozenset[TaskStatus] = frozenset({T.DONE, T.FINISHED, T.FAILED, T.BROKEN, T.ABORTED})

#: Statuses the task manager works on (define, propagate job results, generate jobs, conclude).
ACTIVE: frozenset[TaskStatus] = frozenset(
    {
        T.REGISTERED,
        T.DEFINED,
        T.STAGING,
        T.READY,
        T.RUNNING,
        T.PAUSED,
        T.EXHAUSTED,
        T.FINISHING,
        T.ABORTING,
    }
)

#: Statuses in which new jobs are made for ready files.
GENERATING: frozenset[TaskStatus] = frozenset({T.READY, T.RUNNING})

_ENDINGS = (T.DONE, T.FINISHED, T.FAILED)

#: from-status -> statuses it may move to.
ALLOWED_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.REGISTERED: frozenset({T.DEFINED, T.BROKEN, T.PAUSED, T.ABORTING, T.FINISHING}),
    T.DEFINED: frozenset({T.READY, T.STAGING, T.BROKEN, T.PAUSED, T.ABORTING, T.FINISHING}),
    # Input on tape only: the task waits for the data carousel, and is ready once files arrive.
    T.STAGING: frozenset({T.READY, T.PAUSED, T.ABORTING, T.FINISHING}),
    T.READY: frozenset({T.RUNNING, T.PAUSED, T.EXHAUSTED, T.ABORTING, T.FINISHING, *_ENDINGS}),
    T.RUNNING: frozenset({T.READY, T.PAUSED, T.EXHAUSTED, T.ABORTING, T.FINISHING, *_ENDINGS}),
    T.PAUSED: frozenset(
        {T.REGISTERED, T.DEFINED, T.STAGING, T.READY, T.RUNNING, T.EXHAUSTED, T.ABORTING, T.FINISHING}
    ),
    T.EXHAUSTED: frozenset({T.READY, T.PAUSED, T.ABORTING, T.FINISHING}),
    T.FINISHING: frozenset({T.ABORTING, *_ENDINGS}),
    T.ABORTING: frozenset({T.ABORTED}),
    # retry and reactivate bring a final task back to work (retry also a killed one, as JEDI
    # does); broken stays final.
    T.DONE: frozenset({T.READY}),
    T.FINISHED: frozenset({T.READY}),
    T.FAILED: frozenset({T.READY}),
    T.BROKEN: frozenset(),
    T.ABORTED: frozenset({T.READY}),
}

#: superStatus as pbook filters on it ("show run" / "show fin").
SUPER_STATUS: dict[TaskStatus, str] = {
    T.REGISTERED: "registered",
    T.DEFINED: "submitting",
    T.STAGING: "staging",
    T.READY: "ready",
    T.RUNNING: "running",
    T.FINISHING: "running",
    T.ABORTING: "running",
    T.PAUSED: "paused",
    T.EXHAUSTED: "exhausted",
    T.DONE: "done",
    T.FINISHED: "finished",
    T.FAILED: "failed",
    T.BROKEN: "broken",
    T.ABORTED: "aborted",
}


class IllegalTaskMove(Conflict):
    """A task status change the table does not allow; the transaction is rolled back."""

    def __init__(self, task_id: int | None, old: str, new: str) -> None:
        self.task_id, self.old, self.new = task_id, old, new
        who = f"task {task_id}" if task_id is not None else "task"
        super().__init__(f"{who} cannot move from {old} to {new}")


def is_allowed(old: str, new: str) -> bool:
    """True when a task in status ``old`` may move to ``new``."""
    try:
        return TaskStatus(new) in ALLOWED_MOVES[TaskStatus(old)]
    except ValueError:
        return False


def check_move(old: str, new: str, task_id: int | None = None) -> None:
    """Raise :class:`IllegalTaskMove` unless ``old -> new`` is in the table."""
    if not is_allowed(old, new):
        raise IllegalTaskMove(task_id, old, new)


def super_status(status: str) -> str:
    """The superStatus pbook shows for ``status`` (the status itself when unknown)."""
    try:
        return SUPER_STATUS[TaskStatus(status)]
    except ValueError:
        return status
