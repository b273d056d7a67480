"""Choosing a queue for jobs submitted without one.

A queue fits a job when it is online and active, of a type that takes the job's kind of work,
has the job's number of cores, enough memory and a long enough wall-time limit. Among the
fitting queues the job goes where work flows best: the highest (running + 1) / (queued + 1),
counting the jobs this same call has already placed, so a batch spreads over equal queues.
When nothing fits, the job waits in ``defined`` with a brokerage error that says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from pandawms.core.queues import Queue
from pandawms.db.schema import jobs
from pandawms.model.jobspec import USER_LABELS

#: brokerageErrorCode when no queue fits.
NO_QUEUE = 100
TEST_LABELS = frozenset({"ptest", "prod_test", "test", "rc_test", "rc_test2", "rc_alrb", "install"})
_QUEUED = ("defined", "assigned", "activated", "sent", "throttled")
_RUNNING = ("starting", "running")


@dataclass
class Load:
    """Jobs waiting for and running at one queue."""

    queued: int = 0
    running: int = 0

    @property
    def weight(self) -> float:
        """Higher is better: a queue that runs much and has little waiting."""
        return (self.running + 1) / (self.queued + 1)


def queue_loads(conn: Connection, sites: Iterable[str]) -> dict[str, Load]:
    """Queued and running counts of the live jobs at ``sites``."""
    names = list(sites)
    loads = {name: Load() for name in names}
    if not names:
        return loads
    stmt = (
        select(jobs.c.computingSite, jobs.c.jobStatus, func.count())
        .where(jobs.c.computingSite.in_(names), jobs.c.jobStatus.in_(_QUEUED + _RUNNING))
        .group_by(jobs.c.computingSite, jobs.c.jobStatus)
    )
    for site, status, count in conn.execute(stmt):
        if status in _RUNNING:
            loads[site].running += int(count)
        else:
            loads[site].queued += int(count)
    return loads


def misfit(queue: Queue, job: dict[str, Any]) -> str | None:
    """Why ``queue`` cannot take ``job``, or None when it can."""
    label = job.get("prodSourceLabel") or "managed"
    if not queue.active or queue.status == "brokeroff":
        return "not online"
    if queue.status == "test" and label not in TEST_LABELS:
        return "in test status"
    if queue.type == "analysis" and label not in USER_LABELS | TEST_LABELS:
        return "analysis only"
    if queue.type == "production" and label in USER_LABELS:
        return "production only"
    cores = job.get("coreCount") or 1
    if queue.corecount:
        if cores > queue.corecount:
            return f"too few cores (job needs {cores})"
        if (cores > 1) != (queue.corecount > 1):
            return "single-core/multi-core mismatch"
    memory = job.get("minRamCount") or 0
    if queue.maxrss and memory > queue.maxrss:
        return f"not enough memory (job needs {memory} MB)"
    walltime = job.get("maxWalltime") or 0
    if queue.maxtime and walltime > queue.maxtime:
        return f"wall-time limit too short (job needs {walltime} s)"
    return None


def broker(
    conn: Connection, queue_list: Sequence[Queue], to_place: Sequence[dict[str, Any]]
) -> list[tuple[str | None, str]]:
    """For each job: (chosen queue, "") or (None, reason nothing fits)."""
    loads = queue_loads(conn, [q.name for q in queue_list])
    results: list[tuple[str | None, str]] = []
    for job in to_place:
        reasons: Counter[str] = Counter()
        best: Queue | None = None
        for queue in queue_list:
            why = misfit(queue, job)
            if why:
                reasons[why] += 1
                continue
            if best is None or loads[queue.name].weight > loads[best.name].weight:
                best = queue
        if best is None:
            detail = ", ".join(f"{n} {why}" for why, n in reasons.most_common()) or "no queues are configured"
            results.append((None, f"no queue fits: {detail}"[:250]))
        else:
            loads[best.name].queued += 1
            results.append((best.name, ""))
    return results


def broker_waiting_jobs(rt: Any, batch: int = 1000) -> tuple[int, int]:
    """Try again for ``defined`` jobs without a queue (new queues, freed capacity).

    Returns (placed, still waiting).
    """
    from pandawms.core.queues import list_queues
    from pandawms.core.runtime import utcnow
    from pandawms.core.transitions import MOVE_COLUMNS, move_jobs
    from pandawms.db.engine import write_tx

    cols = [jobs.c[c] for c in (*MOVE_COLUMNS, "coreCount", "minRamCount", "maxWalltime")]
    stmt = (
        select(*cols)
        .where(jobs.c.jobStatus == "defined", jobs.c.computingSite.is_(None))
        .order_by(jobs.c.currentPriority.desc(), jobs.c.PandaID)
        .limit(batch)
    )
    if rt.skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    queue_list = list_queues(rt, fresh=True)
    placed = waiting = 0
    now = utcnow()
    with write_tx(rt.engine) as conn:
        waiting_jobs = [dict(r) for r in conn.execute(stmt).mappings()]
        for job, (site, why) in zip(waiting_jobs, broker(conn, queue_list, waiting_jobs), strict=True):
            if site:
                move_jobs(
                    conn,
                    [job],
                    "activated",
                    now,
                    {"computingSite": site, "brokerageErrorCode": 0, "brokerageErrorDiag": None},
                    reason=f"brokered to {site}",
                )
                placed += 1
            else:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.PandaID == job["PandaID"])
                    .values(brokerageErrorCode=NO_QUEUE, brokerageErrorDiag=why)
                )
                waiting += 1
    return placed, waiting
