"""Moving final jobs from the live table to the archive.

Dispatch and heartbeats only touch ``jobs``; keeping final jobs out of it keeps those queries
fast at any history size. Each batch is copied and deleted in one transaction, so a process
killed mid-batch leaves every job in exactly one of the two tables.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.model.states import TERMINAL

BATCH = 1000


def archive_final_jobs(rt: Runtime, now: dt.datetime | None = None, max_batches: int = 1000) -> int:
    """Move final jobs older than ``archive_delay`` to ``jobs_archive``; returns how many moved."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=rt.settings.archive_delay)
    names = [c.name for c in jobs.columns]
    moved = 0
    for _ in range(max_batches):
        stmt = (
            select(jobs.c.PandaID)
            .where(jobs.c.jobStatus.in_([s.value for s in TERMINAL]), jobs.c.modificationTime <= cutoff)
            .order_by(jobs.c.PandaID)
            .limit(BATCH)
        )
        if rt.skip_locked:
            stmt = stmt.with_for_update(skip_locked=True)
        with write_tx(rt.engine) as conn:
            ids = [int(r[0]) for r in conn.execute(stmt)]
            if not ids:
                break
            conn.execute(
                insert(jobs_archive).from_select(
                    names, select(*[jobs.c[n] for n in names]).where(jobs.c.PandaID.in_(ids))
                )
            )
            conn.execute(jobs.delete().where(jobs.c.PandaID.in_(ids)))
        moved += len(ids)
        if len(ids) < BATCH:
            break
    return moved
