"""Job cloning: several copies of a job run, and one of them counts.

A task with job cloning (``task/enable_job_cloning``) has each piece of work made as clones
that share a ``jobsetID`` and carry ``sc:1`` (``runonce``) or ``sc:2`` (``storeonce``) in
``specialHandling``, as the real JEDI marks them; the pilot is told the mode (``cloneJob``).
One semaphore per jobset decides which clone counts (:data:`job_clone_semaphores`):

- ``runonce``: the first clone whose pilot reports it running takes the semaphore; a clone
  that starts later is closed at once (its pilot is told ``tobekilled``), so the work runs once.
  If the holder fails, the semaphore is released and the next clone to start takes it.
- ``storeonce``: every clone runs; the first to finish successfully takes the semaphore and
  keeps its output; a clone finishing after it is closed (``jc_unlock``, error 200, "closed
  since another clone PandaID=... got semaphore").

When the clone holding the semaphore finishes, the clones still alive are ended. The
semaphore is taken with one insert that does nothing when the row exists (every backend has
one), so two clones that race for it in two transactions cannot both win. The task's files
follow the winner: their ``PandaID`` is moved to it, so the task layer counts its outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_job
from pandawms.core.links import kill_workers_of_jobs
from pandawms.db.engine import supports_skip_locked
from pandawms.db.schema import files, job_clone_semaphores, jobs
from pandawms.db.schema_tasks import task_files
from pandawms.model.states import TERMINAL, JobStatus

RUNONCE = "runonce"
STOREONCE = "storeonce"
_MODES = {"1": RUNONCE, "2": STOREONCE}
_CODES = {RUNONCE: "1", STOREONCE: "2"}
#: taskBufferErrorCode of a clone closed because another one holds the semaphore (EC_JobCloningUnlock).
UNLOCK_ERROR = 200
#: Columns the cloning decisions read from a job row.
COLUMNS = ("jediTaskID", "jobsetID")


def mode_of(special_handling: str | None) -> str | None:
    """``runonce`` or ``storeonce`` for a clone (``sc:<n>`` in ``specialHandling``), else None."""
    for token in (special_handling or "").split(","):
        tag, _, value = token.partition(":")
        if tag == "sc":
            return _MODES.get(value)
    return None


def header(special_handling: str | None, mode: str) -> str:
    """``specialHandling`` with the clone header of ``mode`` added (JEDI's setHeaderForJobCloning)."""
    tokens = [t for t in (special_handling or "").split(",") if t and t.partition(":")[0] != "sc"]
    return ",".join([*tokens, f"sc:{_CODES[mode]}"])


def _insert_if_absent(conn: Connection, row: dict[str, Any]) -> None:
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(postgresql.insert(job_clone_semaphores).values(**row).on_conflict_do_nothing())
    elif name == "sqlite":
        conn.execute(sqlite.insert(job_clone_semaphores).values(**row).on_conflict_do_nothing())
    else:
        conn.execute(mysql.insert(job_clone_semaphores).values(**row).prefix_with("IGNORE"))


def take_semaphore(conn: Connection, job: dict[str, Any], now: dt.datetime) -> int:
    """Try to take the jobset's semaphore for ``job``; the PandaID of the clone that holds it."""
    task_id, jobset_id, panda_id = job.get("jediTaskID"), job.get("jobsetID"), int(job["PandaID"])
    if task_id is None or jobset_id is None:
        return panda_id  # not part of a task: nothing to share the work with
    _insert_if_absent(
        conn, {"jediTaskID": task_id, "jobsetID": jobset_id, "PandaID": panda_id, "lockTime": now}
    )
    winner = conn.execute(
        select(job_clone_semaphores.c.PandaID).where(
            job_clone_semaphores.c.jediTaskID == task_id, job_clone_semaphores.c.jobsetID == jobset_id
        )
    ).scalar_one()
    if int(winner) == panda_id:
        _follow_winner(conn, job)
    return int(winner)


def _clones(conn: Connection, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The other live clones of ``job``'s jobset."""
    stmt = select(*[jobs.c[c] for c in (*MOVE_COLUMNS, "commandToPilot", "specialHandling")]).where(
        jobs.c.jediTaskID == job["jediTaskID"],
        jobs.c.jobsetID == job["jobsetID"],
        jobs.c.PandaID != job["PandaID"],
        jobs.c.jobStatus.notin_([s.value for s in TERMINAL]),
    )
    if conn.dialect.name != "sqlite":
        # A clone locked now is being updated by its own pilot's transaction, which will find
        # the semaphore taken and close that clone itself: skipping it avoids a deadlock.
        stmt = stmt.order_by(jobs.c.PandaID).with_for_update(skip_locked=supports_skip_locked(conn.engine))
    return [dict(r) for r in conn.execute(stmt).mappings() if mode_of(r["specialHandling"])]


def _follow_winner(conn: Connection, job: dict[str, Any]) -> None:
    """Point the task's files of the jobset at the winning clone."""
    ids = [
        int(r[0])
        for r in conn.execute(
            select(jobs.c.PandaID).where(
                jobs.c.jediTaskID == job["jediTaskID"], jobs.c.jobsetID == job["jobsetID"]
            )
        )
    ]
    conn.execute(
        task_files.update()
        .where(task_files.c.jediTaskID == job["jediTaskID"], task_files.c.PandaID.in_(ids))
        .values(PandaID=job["PandaID"])
    )


def close_as_loser(job: dict[str, Any], winner: int) -> dict[str, Any]:
    """The columns of a clone that lost the semaphore to ``winner``."""
    return {
        "jobSubStatus": "jc_unlock",
        "taskBufferErrorCode": UNLOCK_ERROR,
        "taskBufferErrorDiag": f"closed since another clone PandaID={winner} got semaphore",
    }


def close_loser(conn: Connection, job: dict[str, Any], winner: int, now: dt.datetime) -> None:
    """Close ``job``, a clone that did not get the semaphore (its outputs are not kept)."""
    values = close_as_loser(job, winner)
    values["endTime"] = now
    move_job(conn, job, JobStatus.CLOSED.value, now, values, reason=values["taskBufferErrorDiag"])
    conn.execute(
        files.update()
        .where(files.c.PandaID == job["PandaID"], files.c.type.in_(("output", "log")))
        .values(status="failed", modificationTime=now)
    )


def after_final(conn: Connection, job: dict[str, Any], status: str, now: dt.datetime) -> None:
    """After a clone's final report: a finished holder ends the other clones; a holder that did
    not finish gives the semaphore back (``runonce``: another clone may take the work)."""
    if job.get("jediTaskID") is None or job.get("jobsetID") is None:
        return
    key = (
        (job_clone_semaphores.c.jediTaskID == job["jediTaskID"])
        & (job_clone_semaphores.c.jobsetID == job["jobsetID"])
        & (job_clone_semaphores.c.PandaID == job["PandaID"])
    )
    if status == JobStatus.FINISHED.value:
        if conn.execute(select(job_clone_semaphores.c.PandaID).where(key)).first() is not None:
            end_other_clones(conn, job, now)
    else:
        conn.execute(job_clone_semaphores.delete().where(key))


def end_other_clones(conn: Connection, job: dict[str, Any], now: dt.datetime) -> list[int]:
    """End the live clones of ``job`` (which holds the semaphore); their PandaIDs.

    A clone a pilot runs is told ``tobekilled`` (its pilot stops it and reports); one still
    waiting for a pilot is closed at once.
    """
    ended = []
    clones = _clones(conn, job)
    if clones:
        kill_workers_of_jobs(conn, [c["PandaID"] for c in clones])
    for clone in clones:
        if clone["jobStatus"] in (JobStatus.RUNNING.value, JobStatus.STARTING.value, JobStatus.SENT.value):
            values = {**close_as_loser(clone, int(job["PandaID"])), "commandToPilot": "tobekilled"}
            conn.execute(jobs.update().where(jobs.c.PandaID == clone["PandaID"]).values(**values))
        else:
            close_loser(conn, clone, int(job["PandaID"]), now)
        ended.append(int(clone["PandaID"]))
    return ended
