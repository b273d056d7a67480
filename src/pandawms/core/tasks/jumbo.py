"""Jumbo and co-jumbo jobs of an event-service task, as JEDI runs them.

task/enable_jumbo_jobs sets the task's ``useJumbo`` to "W" with ``numJumboJobs`` (at most that
many alive at once) and ``numJumboJobsPerSite`` (at most that many on one queue). The task
manager's pass then:

* keeps the jumbo jobs (``eventService=4``) alive while ranges wait: each takes ranges from every
  job set of the task (core/events/dispatch.py), so a few long jobs on a big resource drain many
  job sets;
* holds back the co-jumbo jobs (``eventService=5``, the consumers made while jumbo jobs are on):
  they are stored ``waiting`` and not dispatched while the jumbo jobs do the work;
* releases a waiting co-jumbo job (``activated``) when its job set still has ranges to give and
  the jumbo jobs cannot take them: jumbo jobs were switched off ("D"), none is alive (no queue
  may take one), or it has waited :data:`MAX_WAIT` (JEDI's six hours);
* closes a waiting co-jumbo job whose job set has no range left to give: the jumbo jobs (or
  others) did its work, and the merge job follows as usual.

Every range is handed out by the same claim (core/events/dispatch.py), whoever asks, so ranges
taken by a mix of jumbo, co-jumbo and plain consumers are never handed out twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, select

from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_jobs
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.generate import make_jumbo_jobs
from pandawms.core.tasks.params import TaskPlan
from pandawms.db.schema import jobs
from pandawms.db.schema_events import event_ranges
from pandawms.model.event_states import CLAIMABLE, HELD, EventServiceFlag, jumbo_enabled
from pandawms.model.states import JobStatus

#: How long a co-jumbo job waits for the jumbo jobs before it runs anyway.
MAX_WAIT = dt.timedelta(hours=6)
#: Job states in which a jumbo job still counts towards the task's limits.
JUMBO_ALIVE = ("defined", "assigned", "activated", "sent", "starting", "running", "holding", "transferring")
_MOVE = [jobs.c[name] for name in MOVE_COLUMNS]


def alive_jumbo_by_site(conn: Connection, task_id: int) -> dict[str, int]:
    """The task's jumbo jobs not yet ended, counted by queue."""
    rows = conn.execute(
        select(jobs.c.computingSite, func.count())
        .where(
            jobs.c.jediTaskID == task_id,
            jobs.c.eventService == int(EventServiceFlag.JUMBO),
            jobs.c.jobStatus.in_(JUMBO_ALIVE),
        )
        .group_by(jobs.c.computingSite)
    )
    return {str(site): int(n) for site, n in rows}


def _waiting_ranges(conn: Connection, task_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(event_ranges)
            .where(event_ranges.c.jediTaskID == task_id, event_ranges.c.status.in_(CLAIMABLE))
        ).scalar_one()
    )


def keep_jumbo_jobs(
    conn: Connection, rt: Runtime, task: dict[str, Any], plan: TaskPlan | None, now: dt.datetime
) -> int:
    """Make jumbo jobs up to ``numJumboJobs`` (and ``numJumboJobsPerSite`` on each queue) while
    ranges wait to be taken; how many were made."""
    if not jumbo_enabled(task) or plan is None or plan.event_service is None:
        return 0
    task_id = int(task["jediTaskID"])
    alive = alive_jumbo_by_site(conn, task_id)
    missing = int(task["numJumboJobs"]) - sum(alive.values())
    waiting = _waiting_ranges(conn, task_id) if missing > 0 else 0
    if not waiting:
        return 0
    return make_jumbo_jobs(conn, rt, task, plan, min(missing, waiting), now, alive)


def steer_co_jumbo(conn: Connection, task: dict[str, Any], now: dt.datetime, release: bool = True) -> int:
    """Release or close the task's waiting co-jumbo jobs (see the module); how many moved.

    ``release``: the task still wants work (a paused or ending task only closes them)."""
    task_id = int(task["jediTaskID"])
    waiting = [
        dict(r)
        for r in conn.execute(
            select(*_MOVE, jobs.c.jobsetID, jobs.c.creationTime).where(
                jobs.c.jediTaskID == task_id,
                jobs.c.eventService == int(EventServiceFlag.CO_JUMBO),
                jobs.c.jobStatus == JobStatus.WAITING.value,
            )
        ).mappings()
    ]
    if not waiting:
        return 0
    jobsets = sorted({int(j["jobsetID"]) for j in waiting if j["jobsetID"] is not None})
    open_by_set: dict[int, tuple[int, int]] = {}
    for jobset, status, n in conn.execute(
        select(event_ranges.c.jobsetID, event_ranges.c.status, func.count())
        .where(
            event_ranges.c.jediTaskID == task_id,
            event_ranges.c.jobsetID.in_(jobsets),
            event_ranges.c.status.in_((*CLAIMABLE, *HELD)),
        )
        .group_by(event_ranges.c.jobsetID, event_ranges.c.status)
    ):
        ready, held = open_by_set.get(int(jobset), (0, 0))
        if status in CLAIMABLE:
            ready += int(n)
        else:
            held += int(n)
        open_by_set[int(jobset)] = (ready, held)
    jumbo_working = jumbo_enabled(task) and bool(alive_jumbo_by_site(conn, task_id))
    to_close: list[dict[str, Any]] = []
    to_release: list[dict[str, Any]] = []
    for job in waiting:
        ready, held = open_by_set.get(int(job["jobsetID"] or 0), (0, 0))
        if ready == 0 and held == 0:
            to_close.append(job)
        elif release and ready and (not jumbo_working or now - job["creationTime"] >= MAX_WAIT):
            to_release.append(job)
    for job in (*to_close, *to_release):
        for key in ("jobsetID", "creationTime"):
            job.pop(key)
    moved = 0
    if to_close:
        moved += move_jobs(
            conn, to_close, JobStatus.CLOSED.value, now, reason="co-jumbo: every range of its job set is done"
        )
    if to_release:
        moved += move_jobs(
            conn, to_release, JobStatus.ACTIVATED.value, now, reason="co-jumbo released: ranges left for it"
        )
    return moved
