"""Placing jobs that wait without a queue: the brokerage's pass over ``defined`` jobs.

The brokerage (:mod:`pandawms.core.queues.brokerage`) only chooses a queue; moving a job to
``activated`` there is a job state change, so this pass lives with the jobs and goes through
:func:`pandawms.core.jobs.transitions.move_jobs` like every other.
"""

from __future__ import annotations

from sqlalchemy import select

from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_jobs
from pandawms.core.queues.brokerage import NO_QUEUE, broker
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs


def broker_waiting_jobs(rt: Runtime, batch: int = 1000) -> tuple[int, int]:
    """Try again for ``defined`` jobs without a queue (new queues, freed capacity).

    Returns (placed, still waiting).
    """
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
