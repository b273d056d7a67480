"""Handing activated jobs to pilots: the one path that must never give a job out twice.

Candidates are read and flipped to ``sent`` in one transaction. On PostgreSQL and MariaDB the
read takes row locks with ``FOR UPDATE SKIP LOCKED``, so concurrent pilots on any number of
nodes each take different rows without waiting on each other; on SQLite the transaction holds
the database write lock from BEGIN. The flip is also guarded on ``jobStatus='activated'`` by
:func:`move_jobs`, so even a broken lock could not send one job twice.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select

from pandawms.core.batching import GroupRunner
from pandawms.core.jobs.pilot_binding import dispatch_values
from pandawms.core.jobs.read import attach_details
from pandawms.core.jobs.transitions import move_jobs
from pandawms.core.queues.shares import dispatch_order
from pandawms.core.runtime import Runtime, utcnow
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


def _validate(rt: Runtime, req: DispatchRequest) -> None:
    if not req.site:
        raise PandaError("siteName is required")
    limit = rt.settings.max_jobs_per_dispatch
    if not 1 <= req.n_jobs <= limit:
        raise PandaError(f"nJobs must be between 1 and {limit}, got {req.n_jobs}")


def _tightest(values: list[int]) -> int:
    """The strictest of several pilots' limits (0 means no limit)."""
    positive = [v for v in values if v > 0]
    return min(positive) if positive else 0


def _acquire_batch(rt: Runtime, requests: list[DispatchRequest], who: Identity) -> list[list[dict[str, Any]]]:
    """One transaction for several compatible requests; each gets its share, in arrival order.

    The candidates satisfy every request: memory, disk and time limits are the strictest of the
    batch, the other filters are equal by construction (see :func:`_batch_key`).
    """
    first = requests[0]
    merged = replace(
        first,
        n_jobs=sum(r.n_jobs for r in requests),
        memory_mb=_tightest([r.memory_mb for r in requests]),
        disk_mb=_tightest([r.disk_mb for r in requests]),
        remaining_time=_tightest([r.remaining_time for r in requests]),
    )
    open_mode = rt.settings.auth_mode == "open"
    stmt = (
        select(jobs)
        .where(and_(*_where(merged, who, open_mode)))
        .order_by(jobs.c.currentPriority.desc(), jobs.c.PandaID.asc())
        .limit(merged.n_jobs)
    )
    if rt.skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    order = dispatch_order(rt)  # before the transaction: it may read (another connection)
    now = utcnow()
    values: dict[str, Any] = {
        "startTime": now,
        "jobExecutionID": 1 if first.background else 0,
        # Who takes the jobs: only they may report on them (core/jobs/pilot_binding.py).
        **dispatch_values(who),
    }
    with write_tx(rt.engine) as conn:
        candidates = _take(conn, stmt, merged.n_jobs, order)
        if not candidates:
            return [[] for _ in requests]
        shares: list[list[dict[str, Any]]] = []
        per_job: dict[int, dict[str, Any]] = {}
        position = 0
        for req in requests:
            share = candidates[position : position + req.n_jobs]
            position += len(share)
            shares.append(share)
            for job in share:
                per_job[job["PandaID"]] = {
                    "modificationHost": (req.node or job["modificationHost"] or "")[:128] or None,
                    "computingElement": (req.computing_element or "")[:128] or None,
                    "schedulerID": (req.scheduler_id or "")[:128] or None,
                    "dispatchNode": (req.node or "")[:128] or None,
                }
        move_jobs(conn, candidates, JobStatus.SENT.value, now, values, reason="dispatched", per_job=per_job)
        # The locked rows are the jobs as they now are, once the values just written are applied:
        # no second read of the rows.
        for job in candidates:
            job.update(values, jobStatus=JobStatus.SENT.value, stateChangeTime=now, modificationTime=now)
            job.update(per_job[job["PandaID"]])
        attach_details(conn, {job["PandaID"]: job for job in candidates})
    return shares


def _take(conn: Connection, stmt: Select[Any], wanted: int, shares: list[str]) -> list[dict[str, Any]]:
    """Read (and lock) up to ``wanted`` candidates: by priority, or share by share.

    With global shares, the share furthest below its target is read first, then the next, and
    jobs of no configured share last; priority orders the jobs within each. Each read uses the
    same locking statement, so the one-owner guarantee is the same either way.
    """
    if not shares:
        return [dict(row) for row in conn.execute(stmt).mappings()]
    taken: list[dict[str, Any]] = []
    groups = [jobs.c.gshare == share for share in shares]
    groups.append(or_(jobs.c.gshare.is_(None), jobs.c.gshare.not_in(shares)))
    for group in groups:
        need = wanted - len(taken)
        if need <= 0:
            break
        taken += [dict(row) for row in conn.execute(stmt.where(group).limit(need)).mappings()]
    return taken


def _batch_key(req: DispatchRequest, who: Identity) -> tuple[Any, ...]:
    """Requests with the same key can share one dispatch transaction."""
    return (
        req.site,
        req.prod_source_label,
        bool(req.computing_element) and req.prod_source_label == "test",
        req.resource_type,
        req.task_id,
        req.prod_user_id,
        req.background,
        req.job_type,
        # The whole identity, not its compact name: every job of a batch is bound to it.
        who.owner,
        who.is_pilot,
        who.is_production,
    )


#: Most requests one dispatch transaction serves.
MAX_BATCH = 200
#: Most jobs one dispatch transaction hands out (Harvester asks for tens at a time); a single
#: request for more still runs, alone.
MAX_JOBS_PER_BATCH = 1000


def acquire_jobs(rt: Runtime, req: DispatchRequest, who: Identity) -> list[dict[str, Any]]:
    """Flip up to ``req.n_jobs`` matching activated jobs to ``sent``; return them in full.

    Highest currentPriority first, then oldest (lowest PandaID). For callers in a thread;
    the API's getJob and ``pilot/acquire_jobs`` come through :func:`acquire_jobs_async`.
    """
    _validate(rt, req)
    return _acquire_batch(rt, [req], who)[0]


def _dispatch_batch(_key: Hashable, items: Sequence[tuple[Runtime, DispatchRequest, Identity]]) -> list[Any]:
    rt, _, who = items[0]
    return _acquire_batch(rt, [req for _, req, _ in items], who)


def _new_runner() -> GroupRunner[tuple[Runtime, DispatchRequest, Identity], list[dict[str, Any]]]:
    """The group commit of a runtime's getJobs (kept by the runtime: one per runtime)."""
    return GroupRunner(
        _dispatch_batch,
        max_batch=MAX_BATCH,
        weight=lambda item: item[1].n_jobs,
        max_weight=MAX_JOBS_PER_BATCH,
        runtime_of=lambda item: item[0],
    )


async def acquire_jobs_async(rt: Runtime, req: DispatchRequest, who: Identity) -> list[dict[str, Any]]:
    """:func:`acquire_jobs` from the event loop: concurrent getJobs share one transaction.

    The request waits on the loop rather than in a thread of its own, so a batch is no longer
    capped by the worker's thread count (see :mod:`pandawms.core.batching`).
    """
    _validate(rt, req)
    # With SKIP LOCKED two batches of one queue take different rows without waiting on each other.
    parallel = 2 if rt.skip_locked_if_known else 1  # never connect on the event loop
    runner = rt.kept("dispatch.group_commit", _new_runner)
    return await runner.submit(_batch_key(req, who), (rt, req, who), parallel)


_SENT_TTL = 5.0


def recently_sent_cached(rt: Runtime, site: str) -> int | None:
    """``nSent`` for ``site`` if the runtime remembers a fresh value, else None."""
    hit = rt.remembered(("sent", site), _SENT_TTL)
    return None if hit is None else int(hit)


def count_recently_sent(rt: Runtime, site: str, window: dt.timedelta = dt.timedelta(seconds=60)) -> int:
    """``nSent``: production jobs of ``site`` sent within the last minute.

    Informational for the pilot, so a value a few seconds old is as good: it is cached per
    process, which keeps a count query off every getJob.
    """
    cached = recently_sent_cached(rt, site)
    if cached is not None:
        return cached
    now_mono = time.monotonic()
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
    rt.remember(("sent", site), int(value), at=now_mono)
    return int(value)
