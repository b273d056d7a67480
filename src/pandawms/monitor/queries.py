"""What the monitor reads from the database, shaped as plain dicts for pages, JSON and the terminal.

Every function here is synchronous (the web handler runs them in a thread) and read-only. The
queries are written for a live table of a million jobs:

* counts over the whole live table (jobs by queue and status) take a covering-index scan that
  costs ~0.2 s at 1M rows, so they are cached per process for a few seconds and refreshed in the
  background while the previous answer is served (a shifter's page never waits on a refresh);
* the status-change chart reads ``job_status_log`` by primary-key range (the window start is
  found by bisection on ``id``, which grows with time), and closed time buckets never change, so
  they are counted once per process and kept;
* job lists page by PandaID (keyset paging): first among the newest rows (a short primary-key
  scan that finds common matches at once), then through the indexes for rare matches.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Integer,
    Table,
    and_,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from pandawms.core.brokerage import misfit
from pandawms.core.jobs_read import load_jobs
from pandawms.core.queues import Queue
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import daemon_runs, job_status_log, jobs, jobs_archive, pilot_logs, queues
from pandawms.db.schema_monitor import monitor_live_counts, monitor_status_buckets
from pandawms.model.states import TERMINAL
from pandawms.monitor.codes import ERROR_COLUMNS, explain, summary

T = TypeVar("T")

#: Statuses in the order a job lives through them (tables and charts use this order).
STATUS_ORDER: tuple[str, ...] = (
    "pending",
    "defined",
    "assigned",
    "waiting",
    "throttled",
    "activated",
    "sent",
    "starting",
    "running",
    "holding",
    "merging",
    "transferring",
    "finished",
    "failed",
    "cancelled",
    "closed",
)
#: Statuses a job reaches through its pilot; their modification times are pilot activity.
PILOT_SEEN: tuple[str, ...] = ("sent", "starting", "running", "holding", "transferring", "finished", "failed")
WAITING: frozenset[str] = frozenset({"pending", "defined", "assigned", "waiting", "throttled", "activated"})

#: Columns of a job list row.
LIST_COLUMNS: tuple[str, ...] = (
    "PandaID",
    "jobStatus",
    "computingSite",
    "prodUserName",
    "jediTaskID",
    "jobName",
    "prodSourceLabel",
    "currentPriority",
    "attemptNr",
    "creationTime",
    "modificationTime",
    *ERROR_COLUMNS,
)

#: Seconds a whole-table count is served without asking again; and how long a stale one may
#: still be served while it is refreshed in the background.
SUMMARY_TTL = 10.0
SUMMARY_STALE = 600.0
#: Live tables at least this big are summarised from the rollup's counts (see _live_snapshot),
#: as long as those are younger than SNAPSHOT_STALE; chart buckets come from the rollup while
#: its cursor moved within ROLLUP_STALE.
SNAPSHOT_MIN_JOBS = 100_000
SNAPSHOT_STALE = dt.timedelta(minutes=3)
ROLLUP_STALE = dt.timedelta(minutes=10)
#: Newest rows looked at first when paging (common filters match among them).
PROBE_ROWS = 20000
#: Time buckets closer to now than this are recounted: late commits may still land in them.
BUCKET_GRACE = dt.timedelta(seconds=120)
#: Bucket sizes the chart may use, seconds.
BUCKET_SIZES = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


class _Cache:
    """Per-process cache with stale-while-revalidate (one background refresh per key at a time)."""

    def __init__(self) -> None:
        self._data: dict[Hashable, tuple[float, Any]] = {}
        self._busy: set[Hashable] = set()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = defaultdict(threading.Lock)

    def get(self, key: Hashable, compute: Callable[[], T], ttl: float, stale: float = 0.0) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
            if hit is not None and now - hit[0] < ttl + stale:
                if key not in self._busy:
                    self._busy.add(key)
                    threading.Thread(target=self._refresh, args=(key, compute), daemon=True).start()
                return hit[1]
            key_lock = self._key_locks[key]
        with key_lock:  # one computation per key; the others wait for its answer
            with self._lock:
                hit = self._data.get(key)
                if hit is not None and time.monotonic() - hit[0] < ttl:
                    return hit[1]
            value = compute()
            with self._lock:
                self._data[key] = (time.monotonic(), value)
            return value

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
            with self._lock:
                self._data[key] = (time.monotonic(), value)
        except Exception:  # noqa: BLE001 - the next request computes in the foreground
            pass
        finally:
            with self._lock:
                self._busy.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


CACHE = _Cache()
#: Closed chart buckets: (database, bucket seconds, bucket start) -> {status: count}.
_BUCKETS: dict[tuple[str, int, dt.datetime], dict[str, int]] = {}
_BUCKETS_LOCK = threading.Lock()


def _db_key(rt: Runtime) -> str:
    return rt.engine.url.render_as_string(hide_password=True)


def status_sort_key(status: str) -> tuple[int, str]:
    """Lifecycle order, unknown statuses last."""
    try:
        return STATUS_ORDER.index(status), status
    except ValueError:
        return len(STATUS_ORDER), status


# --- whole-table counts -------------------------------------------------------------------


@dataclass
class Summary:
    """Live jobs counted by (queue, status), and when that was counted."""

    counts: dict[tuple[str, str], int]
    at: dt.datetime

    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (_, status), n in self.counts.items():
            out[status] += n
        return dict(sorted(out.items(), key=lambda kv: status_sort_key(kv[0])))

    def by_queue(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (queue, status), n in self.counts.items():
            out[queue][status] = n
        return dict(sorted(out.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _count_live(
    conn: Connection,
    task: int | None = None,
    user: str | None = None,
    statuses: Sequence[str] = (),
    queue: str | None = None,
    table: Table = jobs,
) -> dict[tuple[str, str], int]:
    stmt = select(table.c.computingSite, table.c.jobStatus, func.count()).group_by(
        table.c.computingSite, table.c.jobStatus
    )
    if task is not None:
        stmt = stmt.where(table.c.jediTaskID == task)
    if user:
        stmt = stmt.where(table.c.prodUserName == user)
    if statuses:
        stmt = stmt.where(table.c.jobStatus.in_(list(statuses)))
    if queue:
        stmt = stmt.where(table.c.computingSite == queue)
    return {(site or "(no queue)", status): int(n) for site, status, n in conn.execute(stmt)}


def _live_snapshot(conn: Connection) -> Summary | None:
    """The rollup's live counts when they are recent and the live table is big enough to need them.

    A small table is counted directly (exact, and cheap); past :data:`SNAPSHOT_MIN_JOBS` the
    counts of the last ``monitor_rollup`` run (at most a period old) spare every worker the scan.
    """
    from pandawms.monitor import rollup

    state = rollup.read_state(conn, rollup.LIVE_COUNTS)
    if state is None or state[1] < utcnow() - SNAPSHOT_STALE:
        return None
    table = monitor_live_counts
    counts = {
        (site or "(no queue)", status): int(n)
        for site, status, n in conn.execute(select(table.c.computingSite, table.c.jobStatus, table.c.n))
    }
    if sum(counts.values()) < SNAPSHOT_MIN_JOBS:
        return None
    return Summary(counts, state[1])


def live_summary(rt: Runtime, fresh: bool = False) -> Summary:
    """Live jobs by (queue, status), cached per process (see :data:`SUMMARY_TTL`)."""

    def compute() -> Summary:
        with read_tx(rt.engine) as conn:
            snapshot = _live_snapshot(conn)
            if snapshot is not None:
                return snapshot
            return Summary(_count_live(conn), utcnow())

    if fresh:
        return compute()
    return CACHE.get(("summary", _db_key(rt)), compute, SUMMARY_TTL, SUMMARY_STALE)


def filtered_summary(
    rt: Runtime,
    task: int | None = None,
    user: str | None = None,
    statuses: Sequence[str] = (),
    queue: str | None = None,
    include_archive: bool = False,
) -> Summary:
    """Jobs by (queue, status) with filters, counted now (the terminal view)."""
    if task is None and not user and not statuses and not queue and not include_archive:
        return live_summary(rt, fresh=True)
    with read_tx(rt.engine) as conn:
        counts = _count_live(conn, task, user, statuses, queue)
        if include_archive:
            for key, n in _count_live(conn, task, user, statuses, queue, jobs_archive).items():
                counts[key] = counts.get(key, 0) + n
    return Summary(counts, utcnow())


# --- the status-change chart --------------------------------------------------------------


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


def _bucket_expr(dialect: str, start: dt.datetime, seconds: int) -> Any:
    return bucket_number(dialect, job_status_log.c.modificationTime, start, seconds)


def _rolled_buckets(
    rt: Runtime, start: dt.datetime, seconds: int, n_buckets: int
) -> list[dict[str, int]] | None:
    """Chart buckets from the rollup tables plus the status-log rows after its cursor.

    None when the rollup cannot answer: no ``monitor_rollup`` run recently (no daemon, or the
    task is switched off), or a bucket size that is not a multiple of the rollup's.
    """
    from pandawms.monitor import rollup

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
    """Status changes over the last ``hours``; closed buckets are counted once per process."""
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
    db = _db_key(rt)
    with _BUCKETS_LOCK:
        cached = [_BUCKETS.get((db, seconds, s)) for s in starts]
    missing = next((i for i, c in enumerate(cached) if c is None), len(starts))
    counts: list[dict[str, int]] = [dict(c) for c in cached[:missing] if c is not None]
    if missing < len(starts):
        fresh = _count_buckets(rt, starts[missing], seconds, len(starts) - missing)
        with _BUCKETS_LOCK:
            for start, bucket in zip(starts[missing:], fresh, strict=True):
                if start + dt.timedelta(seconds=seconds) <= now - BUCKET_GRACE:
                    _BUCKETS[(db, seconds, start)] = dict(bucket)
            # Forget buckets that have left every window (72 h is the longest).
            horizon = now - dt.timedelta(hours=80)
            for key in [k for k in _BUCKETS if k[2] < horizon]:
                del _BUCKETS[key]
        counts += [dict(b) for b in fresh]
    return Timeline(seconds, starts, counts, hours)


def cached_timeline(rt: Runtime, hours: int) -> Timeline:
    """:func:`timeline`, recomputed at most every few seconds per process."""
    return CACHE.get(
        ("timeline", _db_key(rt), hours), lambda: timeline(rt, hours), SUMMARY_TTL, SUMMARY_STALE
    )


def warm(rt: Runtime) -> None:
    """Fill the dashboard caches in the background, so the first shifter does not wait."""

    def run() -> None:
        try:
            live_summary(rt)
            cached_timeline(rt, 6)
        except Exception:  # noqa: BLE001 - a cold cache is only slower
            pass

    threading.Thread(target=run, name="pandawms-monitor-warm", daemon=True).start()


# --- job lists ----------------------------------------------------------------------------


@dataclass
class JobFilter:
    """What a job list shows: filters, which table, and the page (keyset on PandaID)."""

    statuses: tuple[str, ...] = ()
    queue: str | None = None
    task: int | None = None
    user: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    table: str = "live"
    before: int | None = None
    after: int | None = None
    limit: int = 50

    def where(self, table: Any) -> list[Any]:
        c = table.c
        clauses: list[Any] = []
        if self.statuses:
            clauses.append(
                c.jobStatus.in_(list(self.statuses))
                if len(self.statuses) > 1
                else c.jobStatus == self.statuses[0]
            )
        if self.queue:
            clauses.append(c.computingSite == self.queue)
        if self.task is not None:
            clauses.append(c.jediTaskID == self.task)
        if self.user:
            clauses.append(c.prodUserName == self.user)
        if self.since:
            clauses.append(c.modificationTime >= self.since)
        if self.until:
            clauses.append(c.modificationTime < self.until)
        return clauses


@dataclass
class JobPage:
    """One page of a job list, newest first, with the cursors for the next pages."""

    rows: list[dict[str, Any]]
    has_older: bool
    has_newer: bool
    filters: JobFilter
    elapsed_ms: float = 0.0
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _page_one(conn: Connection, table: Table, f: JobFilter, want: int) -> list[dict[str, Any]]:
    """Up to ``want`` rows of ``table`` matching ``f`` beyond its cursor, in cursor order."""
    cols = [table.c[name] for name in LIST_COLUMNS]
    pid = table.c.PandaID
    newer = f.after is not None
    cursor: list[Any] = []
    if f.after is not None:
        cursor.append(pid > f.after)
    elif f.before is not None:
        cursor.append(pid < f.before)
    order = pid.asc() if newer else pid.desc()
    where = f.where(table)
    if not where:
        stmt = select(*cols).where(*cursor).order_by(order).limit(want)
        return [dict(r) for r in conn.execute(stmt).mappings()]
    # 1. Among the newest PROBE_ROWS rows past the cursor: a short primary-key range scan
    #    that answers common filters (a busy status, a big queue) without touching an index.
    probe = select(*cols).where(*cursor).order_by(order).limit(PROBE_ROWS).subquery()
    stmt = (
        select(*[probe.c[name] for name in LIST_COLUMNS])
        .where(*f.where(probe))
        .order_by(probe.c.PandaID.asc() if newer else probe.c.PandaID.desc())
        .limit(want)
    )
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if len(rows) >= want:
        return rows
    # 2. Past the probed range, let the indexes find the rare matches.
    probe_ids = select(pid.label("id")).where(*cursor).order_by(order).limit(PROBE_ROWS).subquery()
    edge_of = func.max if newer else func.min
    probed, edge = conn.execute(select(func.count(), edge_of(probe_ids.c.id))).one()
    if probed < PROBE_ROWS or edge is None:
        return rows
    beyond = pid > edge if newer else pid < edge
    stmt2 = select(*cols).where(beyond, *where).order_by(order).limit(want - len(rows))
    rows += [dict(r) for r in conn.execute(stmt2).mappings()]
    return rows


def list_jobs(rt: Runtime, f: JobFilter) -> JobPage:
    """A page of jobs matching ``f``, newest first (``after`` pages towards newer jobs)."""
    started = time.perf_counter()
    tables = {"live": [jobs], "archive": [jobs_archive], "all": [jobs, jobs_archive]}[f.table]
    want = f.limit + 1
    rows: list[dict[str, Any]] = []
    with read_tx(rt.engine) as conn:
        for table in tables:
            for row in _page_one(conn, table, f, want):
                row["table"] = "live" if table is jobs else "archive"
                rows.append(row)
    newer = f.after is not None
    rows.sort(key=lambda r: r["PandaID"], reverse=not newer)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    if newer:
        rows.reverse()
    for row in rows:
        row["error"] = summary(row) if row["jobStatus"] in TERMINAL or row.get("brokerageErrorCode") else ""
        for name in ERROR_COLUMNS:
            row.pop(name, None)
    page = JobPage(
        rows=rows,
        has_older=(more if not newer else True),
        has_newer=(more if newer else f.before is not None),
        filters=f,
    )
    if f.table == "live" and not (f.task or f.user or f.since or f.until):
        # Exact totals for status/queue filters come free from the cached summary.
        s = live_summary(rt)
        page.total = sum(
            n
            for (q, st), n in s.counts.items()
            if (not f.statuses or st in f.statuses) and (not f.queue or q == f.queue)
        )
        page.extra["total_at"] = s.at
    page.elapsed_ms = (time.perf_counter() - started) * 1000
    return page


# --- one job ------------------------------------------------------------------------------


def job_history(conn: Connection, panda_id: int) -> list[dict[str, Any]]:
    """The status log of one job, oldest first."""
    log = job_status_log
    stmt = (
        select(
            log.c.modificationTime,
            log.c.oldStatus,
            log.c.jobStatus,
            log.c.computingSite,
            log.c.modificationHost,
            log.c.attemptNr,
            log.c.reason,
        )
        .where(log.c.PandaID == panda_id)
        .order_by(log.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def job_worker_logs(conn: Connection, panda_id: int) -> list[dict[str, Any]]:
    """Logs Harvester uploaded for the workers that ran the job: worker, kind, size, cache path."""
    from pandawms.db.schema_meta import jedi_logs
    from pandawms.db.schema_workers import harvester_rel_jobs_workers as rel
    from pandawms.db.schema_workers import harvester_workers as w

    stmt = (
        select(
            jedi_logs.c.fileName,
            jedi_logs.c.fileSize,
            jedi_logs.c.harvesterID,
            jedi_logs.c.workerID,
            w.c.stdOut,
            w.c.stdErr,
            w.c.batchLog,
        )
        .join(
            rel,
            (rel.c.harvesterID == jedi_logs.c.harvesterID) & (rel.c.workerID == jedi_logs.c.workerID),
        )
        .join(w, (w.c.harvesterID == rel.c.harvesterID) & (w.c.workerID == rel.c.workerID))
        .where(rel.c.PandaID == panda_id)
        .order_by(jedi_logs.c.workerID, jedi_logs.c.fileName)
        .limit(50)
    )
    out = []
    for row in conn.execute(stmt).mappings():
        name = row["fileName"]
        kind = next(
            (k for k in ("stdOut", "stdErr", "batchLog") if (row[k] or "").endswith("/" + name)), "log"
        )
        out.append(
            {
                "harvesterID": row["harvesterID"],
                "workerID": row["workerID"],
                "kind": kind,
                "fileName": name,
                "fileSize": row["fileSize"],
                "path": f"/cache/jedilog/{name}",
            }
        )
    return out


def job_detail(rt: Runtime, panda_id: int, with_why: bool = True) -> dict[str, Any] | None:
    """Everything about one job: attributes, files, history, errors explained, and (while it
    waits) why it has not run. None when no table holds it."""
    with read_tx(rt.engine) as conn:
        found = load_jobs(conn, [panda_id], include_archive=True)
        job = found.get(panda_id)
        if job is None:
            return None
        live = conn.execute(select(jobs.c.PandaID).where(jobs.c.PandaID == panda_id)).first() is not None
        history = job_history(conn, panda_id)
        log_row = conn.execute(select(pilot_logs.c.log).where(pilot_logs.c.PandaID == panda_id)).first()
        worker_logs = job_worker_logs(conn, panda_id)
    file_rows = job.pop("Files", [])
    params = job.pop("jobParameters", None)
    meta = job.pop("metadata", None)
    out: dict[str, Any] = {
        "PandaID": panda_id,
        "table": "live" if live else "archive",
        "job": job,
        "files": file_rows,
        "history": history,
        "errors": explain(job),
        "error_summary": summary(job),
        "jobParameters": params,
        "metadata": meta,
        "pilot_log_tail": (log_row[0] or "")[-8000:] if log_row else None,
        "worker_logs": worker_logs,
    }
    if with_why and job.get("jobStatus") in WAITING:
        out["why"] = why_not_running(rt, panda_id)
    return out


# --- queues -------------------------------------------------------------------------------


def _queue_row(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(queues).where(queues.c.name == name)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    try:
        out["data"] = json.loads(out["data"])
    except (TypeError, ValueError):
        pass
    return out


def _queue_obj(row: dict[str, Any]) -> Queue:
    return Queue(
        row["name"],
        row["status"],
        row["state"],
        row["type"],
        row["corecount"],
        row["maxrss"],
        row["maxtime"],
        row["cloud"],
        row["site"],
    )


def last_pilot_activity(
    conn: Connection, site: str, counts: dict[str, int] | None = None
) -> dt.datetime | None:
    """Newest modificationTime of the site's jobs in statuses pilots set: the last heartbeat seen.

    One max() per status over the dispatch index's (site, status) range. There is deliberately no
    index on modificationTime (heartbeats stay HOT updates on PostgreSQL), so walking one from
    the newest end is not an option: sorting a status's jobs took 4x longer at 1M jobs.
    """
    if counts is None:
        counts = {st: n for (_, st), n in _count_live(conn, queue=site).items()}
    newest: dt.datetime | None = None
    for status in PILOT_SEEN:
        if not counts.get(status, 0):
            continue
        stmt = select(func.max(jobs.c.modificationTime)).where(
            jobs.c.computingSite == site, jobs.c.jobStatus == status
        )
        value = conn.execute(stmt).scalar()
        if value is not None and (newest is None or value > newest):
            newest = value
    return newest


def queue_list(rt: Runtime) -> list[dict[str, Any]]:
    """Every defined queue (and every queue name live jobs use) with its live counts."""
    s = live_summary(rt)
    by_queue = s.by_queue()
    with read_tx(rt.engine) as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(
                    queues.c.name,
                    queues.c.status,
                    queues.c.state,
                    queues.c.type,
                    queues.c.corecount,
                    queues.c.maxrss,
                    queues.c.maxtime,
                    queues.c.updated,
                ).order_by(queues.c.name)
            ).mappings()
        ]
    known = {r["name"] for r in rows}
    for name in by_queue:
        if name not in known and name != "(no queue)":
            rows.append({"name": name, "status": "undefined", "state": None, "type": None})
    for row in rows:
        counts = by_queue.get(row["name"], {})
        row["counts"] = counts
        row["total"] = sum(counts.values())
    rows.sort(key=lambda r: r["name"])
    return rows


def queue_detail(rt: Runtime, name: str, failures: int = 10) -> dict[str, Any] | None:
    """One queue: definition, live counts by status, last heartbeat seen, recent failures."""
    with read_tx(rt.engine) as conn:
        definition = _queue_row(conn, name)
        counts = {st: n for (_, st), n in _count_live(conn, queue=name).items()}
        if definition is None and not counts:
            return None
        last = last_pilot_activity(conn, name, counts)
        recent = [
            dict(r)
            for r in conn.execute(
                select(*[jobs.c[c] for c in LIST_COLUMNS])
                .where(jobs.c.computingSite == name, jobs.c.jobStatus == "failed")
                .order_by(jobs.c.PandaID.desc())
                .limit(failures)
            ).mappings()
        ]
    for row in recent:
        row["error"] = summary(row)
        for col in ERROR_COLUMNS:
            row.pop(col, None)
    reason = None
    if definition is not None:
        queue = _queue_obj(definition)
        if not queue.active or queue.status in ("brokeroff", "test"):
            reason = f"status {queue.status}, state {queue.state or 'ACTIVE'}: pilots get no ordinary jobs"
    return {
        "name": name,
        "defined": definition is not None,
        "definition": definition,
        "counts": dict(sorted(counts.items(), key=lambda kv: status_sort_key(kv[0]))),
        "total": sum(counts.values()),
        "last_heartbeat": last,
        "inactive_reason": reason,
        "recent_failures": recent,
    }


# --- tasks --------------------------------------------------------------------------------


def _task_rows(conn: Any, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Status, name and owner of the tasks the task layer knows (tasks submitted by prun...)."""
    from pandawms.db.schema_tasks import tasks

    if not task_ids:
        return {}
    stmt = select(tasks.c.jediTaskID, tasks.c.status, tasks.c.taskName, tasks.c.userName).where(
        tasks.c.jediTaskID.in_(list(task_ids))
    )
    return {int(r[0]): {"status": r[1], "taskName": r[2], "user": r[3]} for r in conn.execute(stmt)}


def task_detail(rt: Runtime, task_id: int) -> dict[str, Any] | None:
    """Jobs of one jediTaskID by status and queue (live and archived), with its progress."""
    by_status: dict[str, int] = defaultdict(int)
    by_queue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    users: set[str] = set()
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    with read_tx(rt.engine) as conn:
        for table in (jobs, jobs_archive):
            stmt = (
                select(
                    table.c.jobStatus,
                    table.c.computingSite,
                    table.c.prodUserName,
                    func.count(),
                    func.min(table.c.creationTime),
                    func.max(table.c.modificationTime),
                )
                .where(table.c.jediTaskID == task_id)
                .group_by(table.c.jobStatus, table.c.computingSite, table.c.prodUserName)
            )
            for status, site, user, n, created, modified in conn.execute(stmt):
                by_status[status] += int(n)
                by_queue[site or "(no queue)"][status] += int(n)
                if user:
                    users.add(user)
                if created is not None and (first is None or created < first):
                    first = created
                if modified is not None and (last is None or modified > last):
                    last = modified
        known = _task_rows(conn, [task_id]).get(task_id, {})
    total = sum(by_status.values())
    if not total:
        return None
    final = sum(by_status.get(s, 0) for s in TERMINAL)
    return {
        "jediTaskID": task_id,
        "total": total,
        "counts": dict(sorted(by_status.items(), key=lambda kv: status_sort_key(kv[0]))),
        "queues": {q: dict(c) for q, c in sorted(by_queue.items())},
        "users": sorted(users),
        "first_created": first,
        "last_modified": last,
        "finished_fraction": by_status.get("finished", 0) / total,
        "done_fraction": final / total,
        "failed_fraction": by_status.get("failed", 0) / total,
        "status": known.get("status"),
        "taskName": known.get("taskName"),
    }


def task_list(
    rt: Runtime, user: str | None = None, limit: int = 50, include_archive: bool = False
) -> list[dict[str, Any]]:
    """The ``limit`` most recent tasks (by their newest job) with their jobs by status."""
    order: list[int] = []
    seen: set[int] = set()
    tables = [jobs, jobs_archive] if include_archive else [jobs]
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    owners: dict[int, str] = {}
    with read_tx(rt.engine) as conn:
        for table in tables:
            stmt = select(table.c.jediTaskID).where(table.c.jediTaskID.is_not(None))
            if user:
                stmt = stmt.where(table.c.prodUserName == user)
            stmt = stmt.order_by(table.c.PandaID.desc()).limit(100 * limit)
            for (task_id,) in conn.execute(stmt):
                if task_id not in seen and len(order) < limit:
                    seen.add(task_id)
                    order.append(int(task_id))
        if not order:
            return []
        for table in tables:
            stmt2 = (
                select(table.c.jediTaskID, table.c.jobStatus, table.c.prodUserName, func.count())
                .where(table.c.jediTaskID.in_(order))
                .group_by(table.c.jediTaskID, table.c.jobStatus, table.c.prodUserName)
            )
            for task_id, status, owner, n in conn.execute(stmt2):
                counts[int(task_id)][status] += int(n)
                if owner:
                    owners[int(task_id)] = owner
        known = _task_rows(conn, order)
    out = []
    for task_id in sorted(order, reverse=True):
        c = counts[task_id]
        total = sum(c.values())
        out.append(
            {
                "jediTaskID": task_id,
                "user": owners.get(task_id),
                "total": total,
                "counts": dict(sorted(c.items(), key=lambda kv: status_sort_key(kv[0]))),
                "finished_fraction": (c.get("finished", 0) / total) if total else 0.0,
                "done_fraction": (sum(c.get(s, 0) for s in TERMINAL) / total) if total else 0.0,
                "status": known.get(task_id, {}).get("status"),
                "taskName": known.get(task_id, {}).get("taskName"),
            }
        )
    return out


# --- the daemon ---------------------------------------------------------------------------


def daemon_overview(rt: Runtime, failures: int = 20) -> dict[str, Any]:
    """Each daemon task: schedule, last run and outcome, lease holder, runs and failures in the
    last 24 h; plus the most recent failed runs."""
    from pandawms.daemon.leases import holders
    from pandawms.daemon.runner import enabled_tasks

    now = utcnow()
    day = now - dt.timedelta(hours=24)
    tasks_out = []
    try:
        enabled = enabled_tasks(rt.settings)
    except Exception:  # noqa: BLE001 - a bad daemon_tasks setting must not hide the page
        from pandawms.daemon.registry import TASKS

        enabled = list(TASKS.values())
    leases = holders(rt)
    runs = daemon_runs
    with read_tx(rt.engine) as conn:
        for task in enabled:
            last = (
                conn.execute(
                    select(runs).where(runs.c.task == task.name).order_by(runs.c.started.desc()).limit(1)
                )
                .mappings()
                .first()
            )
            outcomes = {
                outcome: int(n)
                for outcome, n in conn.execute(
                    select(runs.c.outcome, func.count())
                    .where(runs.c.task == task.name, runs.c.started >= day)
                    .group_by(runs.c.outcome)
                )
            }
            lease = leases.get(task.name)
            tasks_out.append(
                {
                    "task": task.name,
                    "description": task.description,
                    "period": task.period,
                    "fleet_wide": task.fleet_wide,
                    "last_run": last["started"] if last else None,
                    "last_finished": last["finished"] if last else None,
                    "last_outcome": last["outcome"] if last else None,
                    "last_node": last["node"] if last else None,
                    "last_message": last["message"] if last else None,
                    "next_run": (last["started"] + dt.timedelta(seconds=task.period)) if last else None,
                    "lease_holder": lease["owner"] if lease and lease["expires"] > now else None,
                    "lease_expires": lease["expires"] if lease else None,
                    "runs_24h": outcomes,
                    "failures_24h": sum(n for o, n in outcomes.items() if o not in ("ok", "running")),
                }
            )
        max_id = conn.execute(select(func.max(runs.c.id))).scalar()
        recent: list[dict[str, Any]] = []
        if max_id is not None:
            recent = [
                dict(r)
                for r in conn.execute(
                    select(runs)
                    .where(runs.c.id > int(max_id) - 50000, runs.c.outcome.not_in(("ok", "running")))
                    .order_by(runs.c.id.desc())
                    .limit(failures)
                ).mappings()
            ]
    return {"now": now, "tasks": tasks_out, "recent_failures": recent}


@dataclass
class _RunCounts:
    settled_id: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


_RUN_COUNTS: dict[str, _RunCounts] = {}
_RUN_LOCK = threading.Lock()


def daemon_run_totals(rt: Runtime) -> dict[tuple[str, str], int]:
    """Finished daemon runs by (task, outcome) since the table began, counted incrementally.

    Rows up to the oldest still-running one never change again, so their counts are kept and
    only newer rows are read on each scrape; the table grows forever and is never rescanned.
    """
    key = _db_key(rt)
    runs = daemon_runs
    with _RUN_LOCK:
        state = _RUN_COUNTS.setdefault(key, _RunCounts())
        with read_tx(rt.engine) as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.task, runs.c.outcome)
                .where(runs.c.id > state.settled_id)
                .order_by(runs.c.id)
            ).all()
        pending: dict[tuple[str, str], int] = defaultdict(int)
        settled = True
        for run_id, task, outcome in rows:
            if outcome == "running":
                settled = False
                continue
            if settled:
                state.counts[(task, outcome)] = state.counts.get((task, outcome), 0) + 1
                state.settled_id = int(run_id)
            else:
                pending[(task, outcome)] += 1
        total = dict(state.counts)
        for k, n in pending.items():
            total[k] = total.get(k, 0) + n
        return total


def daemon_last_runs(rt: Runtime) -> dict[str, tuple[dt.datetime | None, str | None]]:
    """(start, outcome) of each registered task's newest run (one index probe per task)."""
    # The runner module registers the tasks; the bare registry is empty in an httpd worker.
    from pandawms.daemon.runner import TASKS

    runs = daemon_runs
    out: dict[str, tuple[dt.datetime | None, str | None]] = {}
    with read_tx(rt.engine) as conn:
        for name in TASKS:
            row = conn.execute(
                select(runs.c.started, runs.c.outcome)
                .where(runs.c.task == name)
                .order_by(runs.c.started.desc())
                .limit(1)
            ).first()
            if row is not None:
                out[name] = (row[0], row[1])
    return out


# --- why a job waits ----------------------------------------------------------------------


def _share_reasons(
    rt: Runtime, job_share: str | None, site: str, facts: dict[str, Any], reasons: list[str]
) -> None:
    """Say when jobs of shares further below target wait at the same queue (they go first)."""
    from pandawms.core.shares import dispatch_order, usage

    used = usage(rt)
    facts["global_shares"] = {
        name: {"target": round(u["target"], 4), "used": round(u["used"], 4)} for name, u in used.items()
    }
    order = dispatch_order(rt)
    mine = job_share if job_share in used else None
    ahead = order[: order.index(mine)] if mine is not None else order
    if not ahead:
        return
    with read_tx(rt.engine) as conn:
        waiting = {
            share: int(n)
            for share, n in conn.execute(
                select(jobs.c.gshare, func.count())
                .where(
                    jobs.c.computingSite == site, jobs.c.jobStatus == "activated", jobs.c.gshare.in_(ahead)
                )
                .group_by(jobs.c.gshare)
            )
        }
    if not waiting:
        return
    others = ", ".join(f"{n} of {share}" for share, n in sorted(waiting.items()))
    if mine is None:
        reasons.append(
            f"its share ({job_share or 'none'}) is not a configured global share: {others} go first"
        )
    else:
        u = used[mine]
        reasons.append(
            f"share {mine} is over its target ({u['used']:.0%} of busy jobs, target {u['target']:.0%}): "
            f"jobs of shares further below target at {site} go first ({others})"
        )


def why_not_running(rt: Runtime, panda_id: int, quiet_minutes: int = 10) -> dict[str, Any]:
    """Why a defined/activated job has not been dispatched: one verdict and the reasons found.

    Checks, in the order they would block the job: it is not waiting at all; it has no queue
    (brokerage: which queues were considered and why none fits); its queue is unknown, offline or
    does not fit it; other activated jobs at the queue come first (higher priority, or the same
    priority and older); no pilot has taken or updated a job at the queue recently.
    """
    from pandawms.core.queues import list_queues

    reasons: list[str] = []
    facts: dict[str, Any] = {}
    now = utcnow()
    with read_tx(rt.engine) as conn:
        row = conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().first()
        if row is None:
            archived = conn.execute(
                select(jobs_archive.c.jobStatus).where(jobs_archive.c.PandaID == panda_id)
            ).first()
            if archived is None:
                return {"PandaID": panda_id, "found": False, "verdict": f"no job {panda_id}", "reasons": []}
            return {
                "PandaID": panda_id,
                "found": True,
                "jobStatus": archived[0],
                "verdict": f"the job is {archived[0]} and archived: it will not run again",
                "reasons": [],
            }
        job = dict(row)
        status = job["jobStatus"]
        site = job["computingSite"]
        base = {"PandaID": panda_id, "found": True, "jobStatus": status, "computingSite": site}
        if status in TERMINAL:
            why = summary(job)
            return {
                **base,
                "verdict": f"the job is {status}: it will not run again" + (f" ({why})" if why else ""),
                "reasons": [],
            }
        if status not in WAITING:
            last = job.get("modificationTime")
            return {
                **base,
                "verdict": f"the job is not waiting: it is {status} (a pilot has it; last update {last})",
                "reasons": [],
            }
        if job.get("commandToPilot") == "tobekilled":
            reasons.append("the job is being killed (commandToPilot=tobekilled)")
        if status in ("pending", "waiting", "throttled", "assigned"):
            reasons.append(
                f"status {status}: the job is held back before activation; it is not offered to pilots"
            )
        if not site:
            known = list_queues(rt, fresh=True)
            misfits: dict[str, int] = defaultdict(int)
            fitting = []
            for q in known:
                m = misfit(q, job)
                if m:
                    misfits[m] += 1
                else:
                    fitting.append(q.name)
            facts["queues_considered"] = len(known)
            facts["fitting_queues"] = fitting[:20]
            if job.get("brokerageErrorDiag"):
                reasons.append(f"brokerage: {job['brokerageErrorDiag']}")
            if not known:
                reasons.append("no queues are defined: load them with 'pandawms queues load FILE'")
            elif fitting:
                reasons.append(
                    f"{len(fitting)} queue(s) fit now ({', '.join(fitting[:5])}); the brokerage daemon task "
                    "places waiting jobs every few minutes"
                )
            else:
                detail = ", ".join(f"{n} {why}" for why, n in sorted(misfits.items(), key=lambda kv: -kv[1]))
                reasons.append(f"no queue fits this job now: {detail}")
            verdict = reasons[-1] if reasons else "the job has no queue yet"
            return {**base, "verdict": verdict, "reasons": reasons, "facts": facts}
        qrow = _queue_row(conn, site)
        if qrow is None:
            reasons.append(
                f"queue {site} is not defined: pilots asking for it are refused; load its definition"
            )
        else:
            queue = _queue_obj(qrow)
            facts["queue_status"] = queue.status
            facts["queue_state"] = queue.state
            problem = misfit(queue, job)
            if problem == "not online":
                reasons.append(
                    f"queue {site} is not online (status {queue.status}, state {queue.state or 'ACTIVE'})"
                )
            elif problem:
                reasons.append(f"queue {site} does not fit this job: {problem}")
        prio = job.get("currentPriority") or 0
        if status == "activated":
            ahead = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(
                    jobs.c.computingSite == site,
                    jobs.c.jobStatus == "activated",
                    or_(
                        jobs.c.currentPriority > prio,
                        and_(jobs.c.currentPriority == prio, jobs.c.PandaID < panda_id),
                    ),
                )
            ).scalar_one()
            facts["activated_ahead"] = int(ahead)
            if ahead:
                reasons.append(
                    f"{ahead} other activated job(s) at {site} come first (higher priority than {prio}, "
                    "or the same priority and older)"
                )
        counts = {st: n for (_, st), n in _count_live(conn, queue=site).items()}
        last = last_pilot_activity(conn, site, counts)
        facts["last_pilot_activity"] = last
        facts["queue_counts"] = counts
        if last is None:
            reasons.append(f"no pilot has ever taken a job at {site} (that this server still knows of)")
        elif now - last > dt.timedelta(minutes=quiet_minutes):
            minutes = int((now - last).total_seconds() // 60)
            reasons.append(
                f"no pilot has asked for or updated a job at {site} for {minutes} min (last at {last:%Y-%m-%d %H:%M:%S})"
            )
    label = job.get("prodSourceLabel") or "managed"
    needs = [f"prodSourceLabel={label}"]
    for name, unit in (
        ("minRamCount", "MB memory"),
        ("maxDiskCount", "MB disk"),
        ("maxWalltime", "s wall time"),
    ):
        if job.get(name):
            needs.append(f"{job[name]} {unit}")
    facts["pilot_must_offer"] = needs
    if rt.settings.global_shares and status == "activated":
        _share_reasons(rt, job_share=job.get("gshare"), site=site, facts=facts, reasons=reasons)
    else:
        facts["global_shares"] = "not configured: priority alone orders dispatch"
    if not reasons:
        verdict = (
            f"nothing blocks it: it is next in line at {site} for a pilot asking with {', '.join(needs)}"
        )
    else:
        verdict = reasons[0]
    return {**base, "verdict": verdict, "reasons": reasons, "facts": facts}


__all__ = [
    "JobFilter",
    "JobPage",
    "STATUS_ORDER",
    "Summary",
    "Timeline",
    "daemon_overview",
    "job_detail",
    "list_jobs",
    "live_summary",
    "queue_detail",
    "queue_list",
    "task_detail",
    "task_list",
    "timeline",
    "why_not_running",
]
