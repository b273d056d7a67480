"""Handing activated jobs to pilots: the one path that must never give a job out twice.

Candidates are read and flipped to ``sent`` in one transaction. On PostgreSQL and MariaDB the
read takes row locks with ``FOR UPDATE SKIP LOCKED``, so concurrent pilots on any number of
nodes each take different rows without waiting on each other; on SQLite the transaction holds
the database write lock from BEGIN. The flip is also guarded on ``jobStatus='activated'`` by
:func:`move_jobs`, so even a broken lock could not send one job twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select

from pandawms.core.jobs_read import load_jobs
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.transitions import MOVE_COLUMNS, move_jobs
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity, clean_user_id
from pandawms.model.jobspec import DISPATCH_LABELS
from pandawms.model.states import JobStatus


@dataclass(frozen=True)
class DispatchRequest:
    """What a pilot (or Harvester) asks for; mirrors getJob's parameters."""

    site: str
    n_jobs: int = 1
    prod_source_label: str | None = None
    computing_element: str | None = None
    node: str | None = None
    memory_mb: int = 0
    disk_mb: int = 0
    remaining_time: int = 0
    resource_type: str | None = None
    task_id: int | None = None
    prod_user_id: str | None = None
    scheduler_id: str | None = None
    background: bool = False
    job_type: str | None = None


def _label_filter(label: str | None, computing_element: str | None, job_type: str | None) -> Any:
    if label is None or label == "managed":
        return jobs.c.prodSourceLabel.in_(DISPATCH_LABELS["managed"])
    if label == "test" and computing_element:
        return or_(jobs.c.processingType == "gangarobot", jobs.c.prodSourceLabel.in_(DISPATCH_LABELS["test"]))
    if label in DISPATCH_LABELS:
        return jobs.c.prodSourceLabel.in_(DISPATCH_LABELS[label])
    return jobs.c.prodSourceLabel == label


def _where(req: DispatchRequest, who: Identity, open_mode: bool) -> list[Any]:
    clauses: list[Any] = [
        jobs.c.computingSite == req.site,
        jobs.c.jobStatus == JobStatus.ACTIVATED.value,
        _label_filter(req.prod_source_label, req.computing_element, req.job_type),
    ]
    if req.memory_mb > 0:
        clauses.append(
            or_(jobs.c.minRamCount <= req.memory_mb, jobs.c.minRamCount == 0, jobs.c.minRamCount.is_(None))
        )
    if req.disk_mb > 0:
        clauses.append(
            or_(jobs.c.maxDiskCount <= req.disk_mb, jobs.c.maxDiskCount == 0, jobs.c.maxDiskCount.is_(None))
        )
    if req.remaining_time > 0:
        clauses.append(or_(jobs.c.maxWalltime.is_(None), jobs.c.maxWalltime <= req.remaining_time))
    if req.resource_type:
        clauses.append(jobs.c.resource_type == req.resource_type)
    if req.task_id is not None:
        clauses.append(jobs.c.jediTaskID == req.task_id)
    if req.background:
        clauses.append(jobs.c.jobExecutionID == 1)
    owner: str | None = None
    if req.prod_user_id and (who.is_production or open_mode):
        owner = clean_user_id(req.prod_user_id)
    elif req.prod_source_label == "user" and not who.is_pilot and not open_mode:
        owner = who.name
    if owner:
        clauses.append(jobs.c.prodUserName == owner)
    return clauses


def acquire_jobs(rt: Runtime, req: DispatchRequest, who: Identity) -> list[dict[str, Any]]:
    """Flip up to ``req.n_jobs`` matching activated jobs to ``sent``; return them in full.

    Highest currentPriority first, then oldest (lowest PandaID).
    """
    if not req.site:
        raise PandaError("siteName is required")
    limit = rt.settings.max_jobs_per_dispatch
    if not 1 <= req.n_jobs <= limit:
        raise PandaError(f"nJobs must be between 1 and {limit}, got {req.n_jobs}")
    open_mode = rt.settings.auth_mode == "open"
    stmt = (
        select(*[jobs.c[name] for name in MOVE_COLUMNS])
        .where(and_(*_where(req, who, open_mode)))
        .order_by(jobs.c.currentPriority.desc(), jobs.c.PandaID.asc())
        .limit(req.n_jobs)
    )
    if rt.skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    now = utcnow()
    values: dict[str, Any] = {"startTime": now, "jobExecutionID": 1 if req.background else 0}
    if req.node:
        values["modificationHost"] = req.node[:128]
    if req.computing_element:
        values["computingElement"] = req.computing_element[:128]
    if req.scheduler_id:
        values["schedulerID"] = req.scheduler_id[:128]
    with write_tx(rt.engine) as conn:
        candidates = [dict(row) for row in conn.execute(stmt).mappings()]
        if not candidates:
            return []
        move_jobs(conn, candidates, JobStatus.SENT.value, now, values, reason="dispatched")
        ids = [c["PandaID"] for c in candidates]
        loaded = load_jobs(conn, ids, include_archive=False)
    return [loaded[i] for i in ids]


def count_recently_sent(rt: Runtime, site: str, window: dt.timedelta = dt.timedelta(seconds=60)) -> int:
    """``nSent``: production jobs of ``site`` sent within the last minute."""
    since = utcnow() - window
    with read_tx(rt.engine) as conn:
        value = conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(
                jobs.c.computingSite == site,
                jobs.c.jobStatus == JobStatus.SENT.value,
                jobs.c.prodSourceLabel.in_(("managed", "test")),
                jobs.c.modificationTime > since,
            )
        ).scalar_one()
    return int(value)
