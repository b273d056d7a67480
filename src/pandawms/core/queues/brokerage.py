"""Choosing a queue for jobs submitted without one.

A queue fits a job when it is online and active, of a type that takes the job's kind of work,
has the job's number of cores, enough memory and a long enough wall-time limit. Among the
fitting queues the job goes where work flows best: the highest (running + 1) / (queued + 1),
counting the jobs this same call has already placed, so a batch spreads over equal queues.
A queue with target slots for the job's share and resource type (``harvester/add_target_slots``,
:mod:`pandawms.core.queues.slots`) counts as running at least ``slots / corecount`` jobs, as
the real brokerage uses its ``num_slots_map``: operators build up pressure on a queue whose
workers are about to come. When nothing fits, the job waits in ``defined`` with a brokerage error that says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from pandawms.core.queues.catalogue import Queue
from pandawms.core.queues.slots import SlotMap, active_slots, standby_slots
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

    def weight_with(self, standby: int | None, corecount: int | None) -> float:
        """:attr:`weight` with a queue's target slots (None: no target applies).

        Running here counts starting jobs too, so a target of 0 (the real brokerage's "count
        starting jobs as running") changes nothing.
        """
        if not standby:
            return self.weight
        running = max(standby // max(corecount or 1, 1), self.running)
        return (running + 1) / (self.queued + 1)


def _weight(loads: dict[str, Load], slots: SlotMap, queue: Queue, job: dict[str, Any]) -> float:
    targets = slots.get(queue.name)
    if not targets:
        return loads[queue.name].weight
    standby = standby_slots(targets, job.get("gshare") or None, job.get("resource_type") or None)
    return loads[queue.name].weight_with(standby, queue.corecount)


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
    names = [q.name for q in queue_list]
    loads = queue_loads(conn, names)
    slots = active_slots(conn, names)
    results: list[tuple[str | None, str]] = []
    for job in to_place:
        reasons: Counter[str] = Counter()
        best: Queue | None = None
        best_weight = 0.0
        for queue in queue_list:
            why = misfit(queue, job)
            if why:
                reasons[why] += 1
                continue
            weight = _weight(loads, slots, queue, job)
            if best is None or weight > best_weight:
                best, best_weight = queue, weight
        if best is None:
            detail = ", ".join(f"{n} {why}" for why, n in reasons.most_common()) or "no queues are configured"
            results.append((None, f"no queue fits: {detail}"[:250]))
        else:
            loads[best.name].queued += 1
            results.append((best.name, ""))
    return results
