"""Following the job sets of an event-service task: merge when every range finished.

An event-service task's input file is processed by the consumers of one job set (the file's
``PandaID`` names it; core/tasks/generate.py makes them). The task manager's pass looks at each
job set whose file is running:

* every range finished: a merge job is made (once); the file finishes when the merge job does
  (its outputs are the task's), and fails when the merge job fails;
* every range ended but some are fatal or cancelled: the file fails;
* ranges are left but every consumer has ended (lost, failed, or finished early): one more
  consumer is made, while the job set has had fewer than ``nEsConsumers * maxAttempt``; after
  that the remaining ranges are cancelled and the file fails.

With jumbo jobs enabled (task/enable_jumbo_jobs) the task also keeps jumbo jobs alive and holds
back, releases or closes its co-jumbo consumers (core/tasks/jumbo.py). While a jumbo job is
alive, a job set whose own consumers ended gets no new consumer.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, select, union_all, update

from pandawms.core.events.store import status_counts
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.generate import make_consumer, make_merge_job
from pandawms.core.tasks.jumbo import alive_jumbo_by_site, keep_jumbo_jobs, steer_co_jumbo
from pandawms.core.tasks.params import BadTaskParameter, TaskPlan, plan_task
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_events import event_ranges
from pandawms.db.schema_tasks import task_files, task_params
from pandawms.model.event_states import (
    CLAIMABLE,
    CONSUMERS,
    FINAL,
    HELD,
    EventServiceFlag,
    RangeStatus,
    jumbo_enabled,
)

JOB_FINAL = ("finished", "failed", "cancelled", "closed")


def pools_of(conn: Connection, task_id: int) -> set[int]:
    """The job sets of a task that have event ranges."""
    return {
        int(j)
        for j in conn.execute(
            select(event_ranges.c.jobsetID).where(event_ranges.c.jediTaskID == task_id).distinct()
        ).scalars()
    }


def _jobs_of(conn: Connection, jobset: int, *flags: int) -> list[tuple[int, str]]:
    wanted = [int(f) for f in flags]
    stmt = union_all(
        select(jobs.c.PandaID, jobs.c.jobStatus).where(
            jobs.c.jobsetID == jobset, jobs.c.eventService.in_(wanted)
        ),
        select(jobs_archive.c.PandaID, jobs_archive.c.jobStatus).where(
            jobs_archive.c.jobsetID == jobset, jobs_archive.c.eventService.in_(wanted)
        ),
    )
    return sorted((int(pid), str(status)) for pid, status in conn.execute(stmt))


def _plan(conn: Connection, rt: Runtime, task_id: int) -> TaskPlan | None:
    text = conn.execute(
        select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
    ).scalar_one()
    try:
        return plan_task(json.loads(text), rt.settings.wn_script_base_url.rstrip("/"))
    except (BadTaskParameter, ValueError):
        return None


def _end_file(conn: Connection, f: dict[str, Any], status: str, now: dt.datetime) -> None:
    conn.execute(
        task_files.update()
        .where(task_files.c.fileID == f["fileID"], task_files.c.status == "running")
        .values(status=status, modificationTime=now)
    )


def follow_pools(conn: Connection, rt: Runtime, task: dict[str, Any], now: dt.datetime, wanting: bool) -> int:
    """Advance the task's running event-service files (see the module); how many changed.

    ``wanting``: the task still wants work (no merge jobs or new consumers otherwise). Joins the
    caller's transaction (the task is locked).
    """
    task_id = int(task["jediTaskID"])
    pools = pools_of(conn, task_id)
    if not pools:
        return 0
    files = [
        dict(r)
        for r in conn.execute(
            select(task_files).where(
                task_files.c.jediTaskID == task_id,
                task_files.c.status == "running",
                task_files.c.type.in_(("input", "pseudo_input")),
                task_files.c.PandaID.in_(sorted(pools)),
            )
        ).mappings()
    ]
    changed = 0
    if wanting and jumbo_enabled(task):
        changed += keep_jumbo_jobs(conn, rt, task, _plan(conn, rt, task_id), now)
    changed += steer_co_jumbo(conn, task, now, release=wanting)
    jumbo_alive = bool(alive_jumbo_by_site(conn, task_id))
    by_jobset: dict[int, list[dict[str, Any]]] = {}
    for f in files:
        by_jobset.setdefault(int(f["PandaID"]), []).append(f)
    plan: TaskPlan | None = None
    counts = status_counts(conn, sorted(by_jobset))
    for jobset, group in sorted(by_jobset.items()):
        merges = _jobs_of(conn, jobset, int(EventServiceFlag.MERGE))
        if merges:
            state = merges[-1][1]
            if state in JOB_FINAL:
                for f in group:
                    _end_file(conn, f, "finished" if state == "finished" else "failed", now)
                changed += len(group)
            continue
        ranges = counts.get(jobset, {})
        still_open = sum(ranges.get(s, 0) for s in (*CLAIMABLE, *HELD))
        if still_open == 0:
            if ranges and set(ranges) == {RangeStatus.FINISHED.value}:
                if not wanting:
                    continue
                plan = plan or _plan(conn, rt, task_id)
                if plan is not None and plan.event_service is not None:
                    changed += make_merge_job(conn, rt, task, plan, jobset, now) is not None
            else:
                for f in group:
                    _end_file(conn, f, "failed", now)
                changed += len(group)
            continue
        consumers = _jobs_of(conn, jobset, *CONSUMERS)
        if jumbo_alive or any(state not in JOB_FINAL for _pid, state in consumers):
            continue
        if sum(ranges.get(s, 0) for s in HELD):
            continue  # the lost consumers' ranges return to the pool first (daemon: event_ranges)
        plan = plan or _plan(conn, rt, task_id)
        if plan is None or plan.event_service is None:
            continue
        if wanting and len(consumers) < plan.event_service.consumers * plan.max_attempt:
            changed += make_consumer(conn, rt, task, plan, group, jobset, now) is not None
            continue
        conn.execute(
            update(event_ranges)
            .where(event_ranges.c.jobsetID == jobset, event_ranges.c.status.not_in(FINAL))
            .values(status=RangeStatus.CANCELLED.value, modificationTime=now)
        )
        for f in group:
            _end_file(conn, f, "failed", now)
        changed += len(group)
    return changed
