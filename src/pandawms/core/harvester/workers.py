"""Harvester workers: their rows, their links to jobs, and what a worker's end means for its jobs.

Harvester reports its workers (batch jobs running pilots) in bulk; each report is an upsert
keyed by (harvesterID, workerID). A report may replace the worker's job list, and a worker that
ended while a job it ran is still ``running`` fails that job when Harvester says it is sure
(``syncLevel`` 1), so a job whose pilot died with its batch slot does not wait for the watcher.
A whole report is one transaction: it is applied completely or not at all.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, String, and_, func, or_, select

from pandawms.core.jobs.retry import retry_if_possible
from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_jobs
from pandawms.core.links import WORKER_FINAL, check_harvester_id, clean_text
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import files, jobs, jobs_archive
from pandawms.db.schema_workers import harvester_rel_jobs_workers as rel
from pandawms.db.schema_workers import harvester_workers as workers
from pandawms.model.errors import PandaError, TaskBufferError
from pandawms.model.values import BadValue, parse_datetime

log = logging.getLogger("pandawms.harvester")

#: Worker statuses Harvester uses (WorkSpec.ST_*), and the final ones among them.
WORKER_STATUSES = frozenset(
    {"submitted", "ready", "running", "idle", "pending", "finished", "failed", "cancelled", "missed"}
)
#: A worker that reached a final status keeps it against late reports for this long.
KEEP_FINAL = dt.timedelta(hours=3)
#: Most workers in one report, and most jobs one worker may list.
MAX_WORKERS_PER_CALL = 2000
MAX_JOBS_PER_WORKER = 10000

_INT_FIELDS = ("nCore", "minRamCount", "nJobs", "nativeExitCode", "errorCode")
_TIME_FIELDS = ("submitTime", "startTime", "endTime")
_TEXT_FIELDS = (
    "batchID",
    "queueName",
    "computingSite",
    "computingElement",
    "resourceType",
    "jobType",
    "nodeID",
    "submissionHost",
    "harvesterHost",
    "nativeStatus",
    "diagMessage",
    "stdOut",
    "stdErr",
    "batchLog",
    "jdl",
)
#: Keys of WorkSpec.convert_to_propagate that are not stored: the server sets lastUpdate itself.
_IGNORED = frozenset({"lastUpdate", "harvesterID"})


@dataclass
class WorkerReport:
    """One worker of an ``update_workers`` call, checked and converted to column values."""

    worker_id: int
    values: dict[str, Any]
    panda_ids: list[int] | None = None
    sync_level: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _int(where: str, name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PandaError(f"{where}: {name} must be an integer, got {value!r}")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or not -(2**63) <= number < 2**63:
        raise PandaError(f"{where}: {name} must be an integer, got {str(value)[:40]!r}")
    return number


def _time(where: str, name: str, value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    text = value
    if isinstance(value, str) and value.startswith("datetime/"):
        text = value[len("datetime/") :]
    try:
        return parse_datetime(text)
    except BadValue as exc:
        raise PandaError(f"{where}: {name} is not a time ({exc}): {str(value)[:40]!r}") from None


def _text(where: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PandaError(f"{where}: {name} must be a string, got {str(value)[:40]!r}")
    column = workers.c[name]
    length = column.type.length if isinstance(column.type, String) else None
    text = clean_text(str(value))
    return text[:length] if length else text


def parse_worker(index: int, data: Any) -> WorkerReport:
    """Check one worker dict as Harvester's ``WorkSpec.convert_to_propagate`` sends it."""
    where = f"worker {index}"
    if not isinstance(data, Mapping):
        raise PandaError(f"{where} must be an object, got {type(data).__name__}")
    worker_id = _int(where, "workerID", data.get("workerID"))
    if worker_id is None or worker_id < 0:
        raise PandaError(f"{where}: workerID is required and must be a non-negative integer")
    where = f"workerID {worker_id}"
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, raw in data.items():
        if name in ("workerID", "pandaid_list", "syncLevel") or name in _IGNORED:
            continue
        if name == "status":
            if raw not in WORKER_STATUSES:
                raise PandaError(
                    f"{where}: status must be one of {', '.join(sorted(WORKER_STATUSES))}, got {str(raw)[:20]!r}"
                )
            values["status"] = raw
        elif name in _INT_FIELDS:
            number = _int(where, name, raw)
            if number is not None and not -(2**31) <= number < 2**31:
                raise PandaError(f"{where}: {name} is out of range: {number}")
            values[name] = number
        elif name in _TIME_FIELDS:
            values[name] = _time(where, name, raw)
        elif name in _TEXT_FIELDS:
            values[name] = _text(where, name, raw)
        else:
            extra[name] = raw  # unknown WorkSpec attributes are ignored, as the real server does
    panda_ids = None
    if data.get("pandaid_list") is not None:
        listed = data["pandaid_list"]
        if not isinstance(listed, list):
            raise PandaError(f"{where}: pandaid_list must be a list of PandaIDs")
        if len(listed) > MAX_JOBS_PER_WORKER:
            raise PandaError(f"{where}: pandaid_list has more than {MAX_JOBS_PER_WORKER} PandaIDs", 413)
        panda_ids = []
        for item in listed:
            number = _int(where, "pandaid_list entry", item)
            if number is None or number <= 0:
                raise PandaError(f"{where}: pandaid_list entries must be positive PandaIDs, got {item!r}")
            panda_ids.append(number)
        panda_ids = sorted(set(panda_ids))
    sync_level = _int(where, "syncLevel", data.get("syncLevel")) or 0
    return WorkerReport(worker_id, values, panda_ids, sync_level, extra)


def parse_workers(items: Any) -> list[WorkerReport]:
    """Check a whole report; the first bad worker refuses the call, naming the worker and field."""
    if not isinstance(items, list):
        raise PandaError("Argument error: workers must be a list of worker objects")
    if len(items) > MAX_WORKERS_PER_CALL:
        raise PandaError(f"Argument error: at most {MAX_WORKERS_PER_CALL} workers per call", 413)
    reports = [parse_worker(index, item) for index, item in enumerate(items)]
    seen: set[int] = set()
    for report in reports:
        if report.worker_id in seen:
            raise PandaError(f"workerID {report.worker_id} appears twice in one call")
        seen.add(report.worker_id)
    return reports


def _locked(rt: Runtime, stmt: Any) -> Any:
    return stmt.with_for_update() if rt.backend != "sqlite" else stmt


def set_job_links(
    conn: Connection, harvester_id: str, worker_id: int, panda_ids: Sequence[int], now: dt.datetime
) -> None:
    """Make ``panda_ids`` exactly the jobs of the worker (touching the links that stay)."""
    key = and_(rel.c.harvesterID == harvester_id, rel.c.workerID == worker_id)
    existing = {int(r[0]) for r in conn.execute(select(rel.c.PandaID).where(key))}
    wanted = set(panda_ids)
    gone = existing - wanted
    if gone:
        conn.execute(rel.delete().where(key, rel.c.PandaID.in_(sorted(gone))))
    kept = existing & wanted
    if kept:
        conn.execute(rel.update().where(key, rel.c.PandaID.in_(sorted(kept))).values(lastUpdate=now))
    new = sorted(wanted - existing)
    if new:
        conn.execute(
            rel.insert(),
            [
                {"harvesterID": harvester_id, "workerID": worker_id, "PandaID": p, "lastUpdate": now}
                for p in new
            ],
        )


def add_job_links(
    conn: Connection, harvester_id: str, worker_id: int, panda_ids: Iterable[int], now: dt.datetime
) -> None:
    """Add jobs to a worker, keeping the ones it already has."""
    key = and_(rel.c.harvesterID == harvester_id, rel.c.workerID == worker_id)
    existing = {int(r[0]) for r in conn.execute(select(rel.c.PandaID).where(key))}
    set_job_links(conn, harvester_id, worker_id, sorted(existing | set(panda_ids)), now)


def _fail_jobs_of_ended_worker(
    conn: Connection, rt: Runtime, status: str, diag: str | None, panda_ids: list[int], now: dt.datetime
) -> int:
    """The worker ended and Harvester is sure: its still running jobs fail (code 300)."""
    if not panda_ids:
        return 0
    stmt = select(*[jobs.c[c] for c in (*MOVE_COLUMNS, "endTime")]).where(
        jobs.c.PandaID.in_(panda_ids), jobs.c.jobStatus.in_(("running", "starting"))
    )
    failed = 0
    for job in [dict(r) for r in conn.execute(_locked(rt, stmt)).mappings()]:
        message = f"The worker was {status} while the job was {job['jobStatus']} : {diag or ''}"
        values: dict[str, Any] = {
            "taskBufferErrorCode": int(TaskBufferError.WORKER_DONE),
            "taskBufferErrorDiag": message[:250],
        }
        if job["endTime"] is None:
            values["endTime"] = now
        move_jobs(conn, [job], "failed", now, values, reason=message[:200])
        conn.execute(
            files.update()
            .where(
                files.c.PandaID == job["PandaID"],
                files.c.type.in_(("output", "log")),
                files.c.status != "ready",
            )
            .values(status="failed", modificationTime=now)
        )
        retry_if_possible(conn, job["PandaID"], now, rt.node, rules=rt.retry_rules)
        failed += 1
    return failed


def _copy_worker_error(conn: Connection, code: int, diag: str | None, panda_ids: list[int]) -> None:
    """A worker's error code goes to its unfinished jobs as supErrorCode, as PanDA shows it."""
    text = f"Diag from worker : {diag or ''}"[:250]
    for table in (jobs, jobs_archive):
        conn.execute(
            table.update()
            .where(
                table.c.PandaID.in_(panda_ids),
                or_(table.c.jobStatus.is_(None), table.c.jobStatus.notin_(("finished", "holding"))),
            )
            .values(supErrorCode=code, supErrorDiag=text)
        )


def _apply(conn: Connection, rt: Runtime, harvester_id: str, report: WorkerReport, now: dt.datetime) -> None:
    key = and_(workers.c.harvesterID == harvester_id, workers.c.workerID == report.worker_id)
    old = conn.execute(_locked(rt, select(workers.c.status, workers.c.lastUpdate).where(key))).first()
    values = {**report.values, "lastUpdate": now}
    if old is None:
        values.setdefault("status", "submitted")
        conn.execute(workers.insert().values(harvesterID=harvester_id, workerID=report.worker_id, **values))
    else:
        old_status, old_update = old
        if old_status in WORKER_FINAL and old_update is not None and old_update > now - KEEP_FINAL:
            values["status"] = old_status  # a late report does not bring an ended worker back
        conn.execute(workers.update().where(key).values(**values))
    if report.panda_ids:
        set_job_links(conn, harvester_id, report.worker_id, report.panda_ids, now)
    status = values.get("status") or (old[0] if old else "submitted")
    linked = [
        int(r[0])
        for r in conn.execute(
            select(rel.c.PandaID).where(rel.c.harvesterID == harvester_id, rel.c.workerID == report.worker_id)
        )
    ]
    diag = values.get("diagMessage")
    if status in WORKER_FINAL and report.sync_level == 1:
        _fail_jobs_of_ended_worker(conn, rt, status, diag, linked, now)
    if values.get("errorCode") and linked:
        _copy_worker_error(conn, int(values["errorCode"]), diag, linked)


def update_workers(rt: Runtime, harvester_id: str, items: Any) -> list[bool]:
    """Apply one ``update_workers`` report; one True per worker (the call is all or nothing)."""
    check_harvester_id(harvester_id)
    reports = parse_workers(items)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        # One lock order for every report, so two overlapping reports cannot deadlock.
        for report in sorted(reports, key=lambda r: r.worker_id):
            _apply(conn, rt, harvester_id, report, now)
    return [True] * len(reports)


def record_dispatch(
    rt: Runtime, harvester_id: str, worker_id: int, site: str, panda_ids: Sequence[int]
) -> None:
    """A pilot of a Harvester worker took jobs: the worker is running and runs them."""
    check_harvester_id(harvester_id)
    now = utcnow()
    key = and_(workers.c.harvesterID == harvester_id, workers.c.workerID == worker_id)
    with write_tx(rt.engine) as conn:
        old = conn.execute(_locked(rt, select(workers.c.status).where(key))).first()
        if old is None:
            conn.execute(
                workers.insert().values(
                    harvesterID=harvester_id,
                    workerID=worker_id,
                    status="running",
                    computingSite=site[:128],
                    nJobs=len(panda_ids),
                    lastUpdate=now,
                )
            )
        elif old[0] not in WORKER_FINAL:
            conn.execute(workers.update().where(key).values(status="running", lastUpdate=now))
        add_job_links(conn, harvester_id, worker_id, panda_ids, now)


def link_dispatched(
    rt: Runtime, harvester_id: str, worker_id: int, site: str, panda_ids: Sequence[int]
) -> None:
    """:func:`record_dispatch` after a dispatch that has already committed.

    The jobs are sent by then: a failure to link them to their worker is logged, never raised,
    so the pilot still gets the jobs it was given (the next worker report links them again).
    """
    try:
        record_dispatch(rt, harvester_id, worker_id, site, panda_ids)
    except Exception as exc:  # noqa: BLE001 - pool timeouts too: the jobs must still reach the pilot
        log.error(
            "jobs %s sent, but not linked to worker %s of %s: %s",
            list(panda_ids),
            worker_id,
            harvester_id,
            exc,
        )


def set_pilot_status(
    rt: Runtime, harvester_id: str, worker_id: int, status: str, node_id: str | None = None
) -> bool:
    """What the pilot inside a worker says (``started`` or ``finished``); False for an unknown worker."""
    if status not in ("started", "finished"):
        raise PandaError(f"status must be started or finished, got {str(status)[:20]!r}")
    check_harvester_id(harvester_id)
    now = utcnow()
    values: dict[str, Any] = {"pilotStatus": "running" if status == "started" else "finished"}
    values["pilotStartTime" if status == "started" else "pilotEndTime"] = now
    if node_id:
        values["nodeID"] = clean_text(node_id)[:128]
    with write_tx(rt.engine) as conn:
        changed = conn.execute(
            workers.update()
            .where(workers.c.harvesterID == harvester_id, workers.c.workerID == worker_id)
            .values(**values)
        ).rowcount
    return bool(changed)


def current_worker_id(rt: Runtime, harvester_id: str) -> int | None:
    """The highest workerID the server knows for an instance (None when it knows none)."""
    check_harvester_id(harvester_id)
    with read_tx(rt.engine) as conn:
        value = conn.execute(
            select(func.max(workers.c.workerID)).where(workers.c.harvesterID == harvester_id)
        ).scalar()
    return None if value is None else int(value)


def workers_of_job(rt: Runtime, panda_id: int) -> list[dict[str, Any]]:
    """Every worker that ran a job, for operators and tests."""
    stmt = (
        select(workers)
        .select_from(
            rel.join(
                workers,
                and_(workers.c.harvesterID == rel.c.harvesterID, workers.c.workerID == rel.c.workerID),
            )
        )
        .where(rel.c.PandaID == panda_id)
        .order_by(workers.c.harvesterID, workers.c.workerID)
    )
    with read_tx(rt.engine) as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]
