"""Job lists (keyset paging by PandaID over live and archived jobs) and one job's full record."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    func,
    select,
)

from pandawms.core.events.store import job_range_counts, ranges_of_job
from pandawms.core.jobs.read import load_jobs
from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import job_status_log, jobs, jobs_archive, pilot_logs
from pandawms.db.schema_meta import jedi_logs
from pandawms.db.schema_workers import harvester_rel_jobs_workers, harvester_workers
from pandawms.model.states import TERMINAL
from pandawms.monitor.codes import ERROR_COLUMNS, explain, summary
from pandawms.monitor.queries.common import LIST_COLUMNS, PROBE_ROWS, WAITING
from pandawms.monitor.queries.summary import live_summary
from pandawms.monitor.queries.why import why_not_running

#: Event ranges a job's page lists (the counts cover them all).
MAX_RANGES_SHOWN = 2000


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
    rel, w = harvester_rel_jobs_workers, harvester_workers
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
        range_counts = job_range_counts(conn, panda_id)
        ranges = ranges_of_job(conn, panda_id, MAX_RANGES_SHOWN) if range_counts else []
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
        "event_range_counts": range_counts,
        "event_ranges": ranges,
    }
    if with_why and job.get("jobStatus") in WAITING:
        out["why"] = why_not_running(rt, panda_id)
    return out
