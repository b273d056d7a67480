"""The ``monitor_rollup`` daemon task: keep the monitor's small summary tables current.

It folds new ``job_status_log`` rows into 5-minute buckets (``monitor_status_buckets``) and
recounts live jobs by queue and status (``monitor_live_counts``), so that a cold dashboard reads
a few thousand rows instead of scanning millions (see :mod:`pandawms.db.schema_monitor`).

Status-log ids are handed out before their transactions commit, so a row may become visible
after rows with higher ids. The rollup therefore stops short of the newest rows: it folds only
ids below the first row written in the last :data:`GRACE`, and pages count everything after
its cursor live. A transaction that stays open longer than the grace would have its rows left
out of the chart (never out of the job tables).
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Integer,
    cast,
    extract,
    func,
    literal,
    literal_column,
    select,
)

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import job_status_log, jobs
from pandawms.db.schema_monitor import monitor_live_counts, monitor_rollup_state, monitor_status_buckets

#: Bucket size of the rollup; every chart bucket size is a multiple of it.
ROLLUP_SECONDS = 300
#: Rows newer than this are left to the pages (a late commit may still land below them).
GRACE = dt.timedelta(seconds=120)
#: Buckets older than this are dropped (the longest chart window is 72 h).
RETENTION = dt.timedelta(hours=80)
#: Status-log ids folded per transaction, and seconds of folding per run (a backlog after an
#: upgrade or a long stop is caught up over several runs, each short).
CHUNK = 200_000
RUN_BUDGET = 20.0
#: Names of the state rows.
LOG_CURSOR = "status_log"
LIVE_COUNTS = "live_counts"

EPOCH = dt.datetime(1970, 1, 1)


def first_log_id_at(conn: Connection, when: dt.datetime) -> int | None:
    """Smallest ``job_status_log.id`` written at or after ``when`` (bisection on the primary key).

    The log has no time index (it is written on every status change and kept small in indexes);
    ids grow with time, so ~25 primary-key lookups find the start of a window. Rows written a
    little out of order around the boundary are caught by the caller's time filter and the
    margin it subtracts.
    """
    log = job_status_log
    bounds = conn.execute(select(func.min(log.c.id), func.max(log.c.id))).first()
    if bounds is None or bounds[0] is None:
        return None
    lo, hi = int(bounds[0]), int(bounds[1]) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            select(log.c.id, log.c.modificationTime).where(log.c.id >= mid).order_by(log.c.id).limit(1)
        ).first()
        if row is None or row[1] >= when:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return lo


def bucket_number(dialect: str, column: Any, start: dt.datetime, seconds: int) -> Any:
    """Integer bucket number of the time ``column`` counted from ``start`` (per backend)."""
    if dialect == "sqlite":
        # Whole epoch seconds, so that every backend puts a row on a boundary in the same bucket.
        offset = cast(func.strftime("%s", column), Integer) - int(calendar.timegm(start.timetuple()))
        return offset / seconds
    if dialect == "postgresql":
        return func.floor(extract("epoch", column - literal(start, DateTime())) / seconds)
    if dialect in ("mysql", "mariadb"):
        return func.floor(
            func.timestampdiff(literal_column("SECOND"), literal(start, DateTime()), column) / seconds
        )
    return func.floor((cast(column, Date) - cast(literal(start, DateTime()), Date)) * 86400 / seconds)


def read_state(conn: Connection, name: str) -> tuple[int, dt.datetime] | None:
    """(last status-log id folded, when) of a state row; None before the first run."""
    row = conn.execute(
        select(monitor_rollup_state.c.lastLogID, monitor_rollup_state.c.updated).where(
            monitor_rollup_state.c.name == name
        )
    ).first()
    return None if row is None else (int(row[0]), row[1])


def _set_state(conn: Connection, name: str, last_id: int, now: dt.datetime) -> None:
    table = monitor_rollup_state
    done = conn.execute(
        table.update().where(table.c.name == name).values(lastLogID=last_id, updated=now)
    ).rowcount
    if not done:
        conn.execute(table.insert().values(name=name, lastLogID=last_id, updated=now))


def _add_buckets(conn: Connection, counts: dict[tuple[dt.datetime, str], int]) -> None:
    """Add counts to buckets (one writer: the task runs under its fleet-wide lease)."""
    table = monitor_status_buckets
    for (start, status), n in counts.items():
        done = conn.execute(
            table.update()
            .where(table.c.bucketStart == start, table.c.jobStatus == status)
            .values(n=table.c.n + n)
        ).rowcount
        if not done:
            conn.execute(table.insert().values(bucketStart=start, jobStatus=status, n=n))


def _fold_chunk(rt: Runtime) -> tuple[int, bool]:
    """Fold the next chunk of settled status-log rows; returns (rows folded, caught up).

    The counting is a read (on SQLite it must not hold the write lock that dispatch and
    heartbeats wait for); the write then moves the cursor only from where the read found it, so
    a second writer (a lease lost mid-run) can never fold the same rows twice.
    """

    log = job_status_log
    counts: dict[tuple[dt.datetime, str], int] = defaultdict(int)
    with read_tx(rt.engine) as conn:
        now = utcnow()
        state = read_state(conn, LOG_CURSOR)
        if state is None:
            first = first_log_id_at(conn, now - RETENTION)
            last = (first or 1) - 1
        else:
            last = state[0]
        settled = first_log_id_at(conn, now - GRACE)
        limit = (settled - 1) if settled is not None else last
        upper = min(limit, last + CHUNK)
        if upper > last:
            bucket = bucket_number(rt.backend, log.c.modificationTime, EPOCH, ROLLUP_SECONDS).label("b")
            inner = (
                select(bucket, log.c.jobStatus.label("s"))
                .where(log.c.id > last, log.c.id <= upper)
                .subquery()
            )
            for number, status, n in conn.execute(
                select(inner.c.b, inner.c.s, func.count()).group_by(inner.c.b, inner.c.s)
            ):
                start = EPOCH + dt.timedelta(seconds=int(number or 0) * ROLLUP_SECONDS)
                counts[(start, status)] += int(n)
    with write_tx(rt.engine) as conn:
        current = read_state(conn, LOG_CURSOR)
        if (current[0] if current else None) != (state[0] if state else None):
            return 0, True  # another run moved the cursor meanwhile: its rows, not ours
        _add_buckets(conn, counts)
        _set_state(conn, LOG_CURSOR, max(upper, last), now)
    return sum(counts.values()), upper >= limit


def _recount_live(rt: Runtime) -> int:
    """Replace the live counts with a fresh count (counted in a read, written in one transaction)."""
    with read_tx(rt.engine) as conn:
        rows = conn.execute(
            select(jobs.c.computingSite, jobs.c.jobStatus, func.count()).group_by(
                jobs.c.computingSite, jobs.c.jobStatus
            )
        ).all()
    with write_tx(rt.engine) as conn:
        conn.execute(monitor_live_counts.delete())
        if rows:
            conn.execute(
                monitor_live_counts.insert(),
                [{"computingSite": site or "", "jobStatus": status, "n": int(n)} for site, status, n in rows],
            )
        _set_state(conn, LIVE_COUNTS, 0, utcnow())
    return len(rows)


def roll_up(rt: Runtime) -> str:
    """Fold new status changes into the chart buckets and recount live jobs; says what it did."""
    started = time.monotonic()
    folded, caught_up = 0, False
    while not caught_up and time.monotonic() - started < RUN_BUDGET:
        n, caught_up = _fold_chunk(rt)
        folded += n
    with write_tx(rt.engine) as conn:
        dropped = conn.execute(
            monitor_status_buckets.delete().where(monitor_status_buckets.c.bucketStart < utcnow() - RETENTION)
        ).rowcount
    pairs = _recount_live(rt)
    backlog = "" if caught_up else " (backlog left for the next run)"
    return f"folded {folded} status changes{backlog}, dropped {dropped} old buckets, {pairs} live queue/status counts"
