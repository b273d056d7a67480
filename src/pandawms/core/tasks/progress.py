"""Following a task's jobs: file results, retries of failed work, and the task's end.

For every input file whose job has ended: a finished job finishes the file (and its outputs);
a failed, cancelled or closed job fails the attempt, and the file is ready again while it has
attempts left and the task still wants work, else it is failed. Only failed work is retried:
finished files are never given to a job again. When nothing is ready or running any more the
task ends ``done`` (every file finished), ``finished`` (some) or ``failed`` (none); a finishing
task ends the same way once its jobs have, an aborting one ``aborted``. Each task is handled
in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections import Counter
from typing import Any

from sqlalchemy import Connection, func, select, union_all

from pandawms.core.events.release import cancel_ranges
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.carousel import wake_task
from pandawms.core.tasks.commands import kill_task_jobs
from pandawms.core.tasks.eventservice import follow_pools, pools_of
from pandawms.core.tasks.generate import advance_task, owner
from pandawms.core.tasks.outputs import enqueue_close
from pandawms.core.tasks.transitions import lock_task, move_task
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_tasks import task_files, tasks
from pandawms.model.task_states import ACTIVE, TaskStatus

log = logging.getLogger("pandawms.tasks")

T = TaskStatus
JOB_FINAL = ("finished", "failed", "cancelled", "closed")
INPUTS = ("input", "pseudo_input")
#: Statuses in which failed files come back for another attempt.
RETRYING = (T.READY, T.RUNNING, T.PAUSED, T.EXHAUSTED)


def _job_states(conn: Connection, panda_ids: list[int]) -> dict[int, str]:
    if not panda_ids:
        return {}
    found: dict[int, str] = {}
    for start in range(0, len(panda_ids), 500):
        chunk = panda_ids[start : start + 500]
        stmt = union_all(
            select(jobs.c.PandaID, jobs.c.jobStatus).where(jobs.c.PandaID.in_(chunk)),
            select(jobs_archive.c.PandaID, jobs_archive.c.jobStatus).where(jobs_archive.c.PandaID.in_(chunk)),
        )
        for pid, status in conn.execute(stmt):
            found[int(pid)] = str(status)
    return found


def _propagate(conn: Connection, task: dict[str, Any], now: dt.datetime) -> int:
    """Apply ended jobs to their files; returns how many files changed."""
    task_id = int(task["jediTaskID"])
    running = [
        dict(r)
        for r in conn.execute(
            select(task_files).where(
                task_files.c.jediTaskID == task_id, task_files.c.status.in_(("running", "defined"))
            )
        ).mappings()
    ]
    # Input files of event-service job sets follow their ranges and merge job (eventservice.py).
    pools = pools_of(conn, task_id)
    running = [f for f in running if not (f["type"] in INPUTS and f["PandaID"] in pools)]
    states = _job_states(conn, sorted({int(f["PandaID"]) for f in running if f["PandaID"] is not None}))
    retrying = TaskStatus(task["status"]) in RETRYING
    changed = 0
    for f in running:
        state = states.get(int(f["PandaID"] or 0))
        if state not in JOB_FINAL:
            continue
        values: dict[str, Any] = {"modificationTime": now}
        if f["type"] in ("output", "log"):
            values["status"] = "finished" if state == "finished" else "failed"
        elif state == "finished":
            values["status"] = "finished"
        else:
            attempt = int(f["attemptNr"]) + 1
            values.update(attemptNr=attempt, failedAttempt=int(f["failedAttempt"]) + 1)
            if retrying and attempt < int(f["maxAttempt"]):
                values.update(status="ready", PandaID=None)
            else:
                values["status"] = "failed"
        conn.execute(
            task_files.update()
            .where(task_files.c.fileID == f["fileID"], task_files.c.status == f["status"])
            .values(**values)
        )
        changed += 1
    return changed


def _counts(conn: Connection, task_id: int) -> Counter[str]:
    rows = conn.execute(
        select(task_files.c.type, task_files.c.status, func.count())
        .where(task_files.c.jediTaskID == task_id, task_files.c.type.in_(("pseudo_input", "input", "lib")))
        .group_by(task_files.c.type, task_files.c.status)
    )
    counts: Counter[str] = Counter()
    for kind, status, n in rows:
        counts[f"{kind}:{status}"] += int(n)
        if kind != "lib":
            counts[str(status)] += int(n)
    return counts


def _conclude(conn: Connection, task: dict[str, Any], now: dt.datetime) -> str | None:
    """End the task when its work is over; the new status or None."""
    task_id = int(task["jediTaskID"])
    status = TaskStatus(task["status"])
    counts = _counts(conn, task_id)
    if counts["lib:failed"] and status in (T.READY, T.RUNNING):
        # Without its library no run job can start: the remaining files fail with it.
        conn.execute(
            task_files.update()
            .where(task_files.c.jediTaskID == task_id, task_files.c.status == "ready")
            .values(status="failed", modificationTime=now)
        )
        counts = _counts(conn, task_id)
    if counts["running"] or counts["lib:running"]:
        return None
    if status == T.ABORTING:
        conn.execute(
            task_files.update()
            .where(task_files.c.jediTaskID == task_id, task_files.c.status.in_(("ready", "staging")))
            .values(status="cancelled", modificationTime=now)
        )
        cancel_ranges(conn, task_id, now)
        move_task(conn, task, T.ABORTED.value, now, reason="all jobs ended")
        return T.ABORTED.value
    # Files still on their way from tape (the data carousel) keep the task going.
    if status in (T.READY, T.RUNNING) and (counts["ready"] or counts["lib:ready"] or counts["staging"]):
        return None
    if status not in (T.READY, T.RUNNING, T.FINISHING):
        return None
    finished, total = (
        counts["finished"],
        sum(counts[s] for s in ("ready", "staging", "finished", "failed", "cancelled")),
    )
    if total and finished == total:
        new = T.DONE
    elif finished:
        new = T.FINISHED
    else:
        new = T.FAILED
    dialog = f"{finished}/{total} files finished" + (
        f", {counts['failed']} failed" if counts["failed"] else ""
    )
    cancel_ranges(conn, task_id, now)
    move_task(conn, task, new.value, now, {"errorDialog": dialog[:510]}, reason=dialog)
    return new.value


def sync_task(rt: Runtime, task_id: int) -> str | None:
    """Bring one task up to date with its jobs in one transaction; its status afterwards."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = lock_task(conn, task_id, skip_locked=rt.skip_locked)
        if task is None or TaskStatus(task["status"]) not in ACTIVE:
            return None if task is None else str(task["status"])
        wanting = TaskStatus(task["status"]) in (T.READY, T.RUNNING)
        if _propagate(conn, task, now) + follow_pools(conn, rt, task, now, wanting):
            conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(modificationTime=now))
        ended = _conclude(conn, task, now)
        if ended is not None and rt.settings.ddm_rucio_host:
            # Its output datasets are complete: closed once their last files are registered.
            enqueue_close(conn, task_id, now)
        return ended or str(task["status"])


def active_task_ids(rt: Runtime, limit: int = 1000) -> list[int]:
    """Up to ``limit`` active tasks for one pass, in jediTaskID order from a random point (wrapping).

    Without state kept between passes every active task is reached, however many there are and
    whether or not they change: ordering by modificationTime would let ``limit`` quiet tasks
    (paused, long-running) hide all the others for ever.
    """
    active = tasks.c.status.in_([s.value for s in ACTIVE])
    with read_tx(rt.engine) as conn:
        low, high = conn.execute(
            select(func.min(tasks.c.jediTaskID), func.max(tasks.c.jediTaskID)).where(active)
        ).one()
        if low is None:
            return []
        pivot = random.randint(int(low), int(high))
        ids = [
            int(r[0])
            for r in conn.execute(
                select(tasks.c.jediTaskID)
                .where(active, tasks.c.jediTaskID >= pivot)
                .order_by(tasks.c.jediTaskID)
                .limit(limit)
            )
        ]
        if len(ids) < limit:
            ids += [
                int(r[0])
                for r in conn.execute(
                    select(tasks.c.jediTaskID)
                    .where(active, tasks.c.jediTaskID < pivot)
                    .order_by(tasks.c.jediTaskID)
                    .limit(limit - len(ids))
                )
            ]
    return ids


def wake_staging(rt: Runtime, task_id: int) -> bool:
    """A task in ``staging`` that has ready files (released while it was paused) becomes ready."""
    with write_tx(rt.engine) as conn:
        return wake_task(conn, task_id, utcnow(), "input files on disk")


def manage_tasks(rt: Runtime) -> dict[str, int]:
    """One pass of the task manager over every active task: follow jobs, make jobs, conclude."""

    counts: Counter[str] = Counter()
    for task_id in active_task_ids(rt):
        try:
            status = sync_task(rt, task_id)
            if status == T.STAGING and wake_staging(rt, task_id):
                # Files released while it was paused (the carousel wakes only tasks in staging).
                status = T.READY
            if status in (T.REGISTERED, T.READY, T.RUNNING):
                counts["jobs"] += advance_task(rt, task_id)
            elif status == T.ABORTING:
                # Jobs made before the kill or whose kill did not take yet are killed again.

                with read_tx(rt.engine) as conn:
                    row = conn.execute(select(tasks).where(tasks.c.jediTaskID == task_id)).mappings().first()
                if row is not None:
                    kill_task_jobs(rt, task_id, owner(dict(row)))
            counts[str(status)] += 1
        except Exception:  # noqa: BLE001 - one broken task must not stop the others' work
            log.exception("task %d: the task manager could not handle it this pass", task_id)
            counts["errors"] += 1
    return dict(counts)
