"""The status-change chart: buckets of job_status_log rows, from the rollup tables when it is current."""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    func,
    select,
)

from pandawms.core.ops import rollup
from pandawms.core.ops.rollup import bucket_number, first_log_id_at
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import job_status_log
from pandawms.db.schema_monitor import monitor_status_buckets
from pandawms.monitor.queries.common import (
    BUCKET_GRACE,
    BUCKET_SIZES,
    ROLLUP_STALE,
    SUMMARY_STALE,
    SUMMARY_TTL,
    status_sort_key,
)
from pandawms.monitor.queries.summary import live_summary


class ClosedBuckets:
    """Chart buckets that can no longer change, counted once per runtime.

    (bucket seconds, bucket start) -> {status: count}; kept by the runtime (:func:`closed_buckets`).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[int, dt.datetime], dict[str, int]] = {}

    def clear(self) -> None:
        with self.lock:
            self.counts.clear()


def closed_buckets(rt: Runtime) -> ClosedBuckets:
    """The runtime's closed chart buckets."""
    return rt.kept("monitor.closed_buckets", ClosedBuckets)


@dataclass
class Timeline:
    """Status changes (job_status_log rows) per time bucket and new status."""

    bucket_seconds: int
    starts: list[dt.datetime]
    counts: list[dict[str, int]]
    hours: int

    def statuses(self) -> list[str]:
        seen = {s for bucket in self.counts for s in bucket}
        return sorted(seen, key=status_sort_key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hours": self.hours,
            "bucket_seconds": self.bucket_seconds,
            "buckets": [
                {"start": start, "counts": dict(sorted(c.items(), key=lambda kv: status_sort_key(kv[0])))}
                for start, c in zip(self.starts, self.counts, strict=True)
            ],
        }


def bucket_size(hours: int) -> int:
    """A round bucket size giving at most 36 bars over ``hours``."""
    wanted = hours * 3600 / 36
    return next((s for s in BUCKET_SIZES if s >= wanted), BUCKET_SIZES[-1])


def _floor_time(when: dt.datetime, seconds: int) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1)
    return epoch + dt.timedelta(seconds=int((when - epoch).total_seconds()) // seconds * seconds)


def _bucket_expr(dialect: str, start: dt.datetime, seconds: int) -> Any:
    return bucket_number(dialect, job_status_log.c.modificationTime, start, seconds)


def _rolled_buckets(
    rt: Runtime, start: dt.datetime, seconds: int, n_buckets: int
) -> list[dict[str, int]] | None:
    """Chart buckets from the rollup tables plus the status-log rows after its cursor.

    None when the rollup cannot answer: no ``monitor_rollup`` run recently (no daemon, or the
    task is switched off), or a bucket size that is not a multiple of the rollup's.
    """

    if seconds % rollup.ROLLUP_SECONDS:
        return None
    with read_tx(rt.engine) as conn:
        state = rollup.read_state(conn, rollup.LOG_CURSOR)
        if state is None or state[1] < utcnow() - ROLLUP_STALE:
            return None
        out: list[dict[str, int]] = [defaultdict(int) for _ in range(n_buckets)]
        table = monitor_status_buckets
        for bucket_start, status, n in conn.execute(
            select(table.c.bucketStart, table.c.jobStatus, table.c.n).where(table.c.bucketStart >= start)
        ):
            index = int((bucket_start - start).total_seconds()) // seconds
            if 0 <= index < n_buckets:
                out[index][status] += int(n)
        log = job_status_log
        inner = (
            select(_bucket_expr(rt.backend, start, seconds).label("b"), log.c.jobStatus.label("s"))
            .where(log.c.id > state[0], log.c.modificationTime >= start)
            .subquery()
        )
        for bucket, status, n in conn.execute(
            select(inner.c.b, inner.c.s, func.count()).group_by(inner.c.b, inner.c.s)
        ):
            index = int(bucket or 0)
            if 0 <= index < n_buckets:
                out[index][status] += int(n)
    return out


def _count_buckets(rt: Runtime, start: dt.datetime, seconds: int, n_buckets: int) -> list[dict[str, int]]:
    out: list[dict[str, int]] = [defaultdict(int) for _ in range(n_buckets)]
    with read_tx(rt.engine) as conn:
        first = first_log_id_at(conn, start)
        if first is None:
            return out
        log = job_status_log
        inner = (
            select(_bucket_expr(rt.backend, start, seconds).label("b"), log.c.jobStatus.label("s"))
            .where(log.c.id >= max(first - 1000, 0), log.c.modificationTime >= start)
            .subquery()
        )
        stmt = select(inner.c.b, inner.c.s, func.count()).group_by(inner.c.b, inner.c.s)
        for bucket, status, n in conn.execute(stmt):
            index = int(bucket or 0)
            if 0 <= index < n_buckets:
                out[index][status] += int(n)
    return out


def timeline(rt: Runtime, hours: int, now: dt.datetime | None = None) -> Timeline:
    """Status changes over the last ``hours``; closed buckets are counted once per runtime."""
    now = now or utcnow()
    seconds = bucket_size(hours)
    first = _floor_time(now - dt.timedelta(hours=hours), seconds)
    starts: list[dt.datetime] = []
    cursor = first
    while cursor <= now:
        starts.append(cursor)
        cursor += dt.timedelta(seconds=seconds)
    rolled = _rolled_buckets(rt, first, seconds, len(starts))
    if rolled is not None:
        return Timeline(seconds, starts, [dict(b) for b in rolled], hours)
    closed = closed_buckets(rt)
    with closed.lock:
        cached = [closed.counts.get((seconds, s)) for s in starts]
    missing = next((i for i, c in enumerate(cached) if c is None), len(starts))
    counts: list[dict[str, int]] = [dict(c) for c in cached[:missing] if c is not None]
    if missing < len(starts):
        fresh = _count_buckets(rt, starts[missing], seconds, len(starts) - missing)
        with closed.lock:
            for start, bucket in zip(starts[missing:], fresh, strict=True):
                if start + dt.timedelta(seconds=seconds) <= now - BUCKET_GRACE:
                    closed.counts[(seconds, start)] = dict(bucket)
            # Forget buckets that have left every window (72 h is the longest).
            horizon = now - dt.timedelta(hours=80)
            for key in [k for k in closed.counts if k[1] < horizon]:
                del closed.counts[key]
        counts += [dict(b) for b in fresh]
    return Timeline(seconds, starts, counts, hours)


def cached_timeline(rt: Runtime, hours: int) -> Timeline:
    """:func:`timeline`, recomputed at most every few seconds per runtime."""
    return rt.cached(("monitor.timeline", hours), lambda: timeline(rt, hours), SUMMARY_TTL, SUMMARY_STALE)


def warm(rt: Runtime) -> None:
    """Fill the dashboard caches in the background, so the first shifter does not wait."""

    def run() -> None:
        try:
            live_summary(rt)
            cached_timeline(rt, 6)
        except Exception:  # noqa: BLE001 - a cold cache is only slower
            pass

    threading.Thread(target=run, name="pandawms-monitor-warm", daemon=True).start()
