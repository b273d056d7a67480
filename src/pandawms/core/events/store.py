"""Making event ranges and reading them back: the pool of each job set, its IDs and its counts.

The eventRangeID the clients see is ``<jediTaskID>-<PandaID>-<fileID>-<job_processID>-<attemptNr>``
as the real server makes it (Harvester reads the task and the position back from it). It names
the consumer and the attempt, so a report from a consumer that lost the range, or about an
earlier hand-out of it, matches no row and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, select

from pandawms.core.events.dispatch import pool_of
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_events import event_ranges
from pandawms.model.errors import Forbidden, PandaError, TooLarge
from pandawms.model.event_states import CLAIMABLE, DEFAULT_MAX_ATTEMPT, TAKES_RANGES, RangeStatus
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_kill

#: Ranges one call may make for one job set (a file of millions of events is split into fewer).
MAX_RANGES_PER_POOL = 200_000
#: Jobs one status read may name.
MAX_JOBS_PER_READ = 1000


@dataclass(frozen=True)
class RangeKey:
    """An eventRangeID, parsed."""

    jedi_task_id: int
    panda_id: int
    file_id: int
    process_id: int
    attempt_nr: int


def range_id(row: dict[str, Any] | Any) -> str:
    """The eventRangeID of a row held by a consumer."""
    return (
        f"{row['jediTaskID']}-{row['PandaID'] or row['jobsetID']}-{row['fileID']}"
        f"-{row['job_processID']}-{row['attemptNr']}"
    )


def parse_range_id(text: Any) -> RangeKey:
    """Parse an eventRangeID; :class:`PandaError` when it is not five whole numbers."""
    if not isinstance(text, str) or len(text) > 200:
        raise PandaError("eventRangeID must be a string of five numbers separated by '-'")
    parts = text.split("-")
    if len(parts) != 5 or not all(p.isdigit() and len(p) <= 19 for p in parts):
        raise PandaError(f"malformed eventRangeID {text[:100]!r}")
    task, panda, file_, process, attempt = (int(p) for p in parts)
    return RangeKey(task, panda, file_, process, attempt)


@dataclass(frozen=True)
class InputFile:
    """A file whose events a job set processes: ``first_event`` to ``last_event`` included."""

    file_id: int
    lfn: str
    first_event: int
    last_event: int
    guid: str | None = None
    scope: str | None = None
    dataset_id: int | None = None


def split(first: int, last: int, per_range: int) -> list[tuple[int, int]]:
    """``[first, last]`` cut into ranges of ``per_range`` events (the last one may be shorter)."""
    if per_range < 1:
        raise PandaError("nEventsPerRange must be at least 1")
    return [(start, min(start + per_range - 1, last)) for start in range(first, last + 1, per_range)]


def create_ranges(
    conn: Connection,
    jedi_task_id: int,
    jobset_id: int,
    files: Iterable[InputFile],
    events_per_range: int,
    max_attempt: int = DEFAULT_MAX_ATTEMPT,
) -> int:
    """Add the ranges of ``files`` to the pool of ``jobset_id``; joins the caller's transaction."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for f in files:
        for number, (start, last) in enumerate(split(f.first_event, f.last_event, events_per_range), 1):
            rows.append(
                {
                    "jediTaskID": jedi_task_id,
                    "jobsetID": jobset_id,
                    "PandaID": None,
                    "datasetID": f.dataset_id,
                    "fileID": f.file_id,
                    "lfn": f.lfn,
                    "GUID": f.guid,
                    "scope": f.scope,
                    "job_processID": number,
                    "startEvent": start,
                    "lastEvent": last,
                    "status": RangeStatus.READY.value,
                    "attemptNr": 0,
                    "failedAttempt": 0,
                    "maxAttempt": max(1, max_attempt),
                    "creationTime": now,
                    "modificationTime": now,
                }
            )
            if len(rows) > MAX_RANGES_PER_POOL:
                raise TooLarge(f"more than {MAX_RANGES_PER_POOL} event ranges for one job set")
    for start in range(0, len(rows), 1000):
        conn.execute(insert(event_ranges), rows[start : start + 1000])
    return len(rows)


def _view(row: Any) -> dict[str, Any]:
    return {
        "eventRangeID": range_id(row),
        "status": row["status"],
        "PandaID": row["PandaID"],
        "jobsetID": row["jobsetID"],
        "LFN": row["lfn"],
        "startEvent": row["startEvent"],
        "lastEvent": row["lastEvent"],
        "attemptNr": row["attemptNr"],
        "failedAttempt": row["failedAttempt"],
        "maxAttempt": row["maxAttempt"],
        "holder": row["holder"],
        "errorCode": row["errorCode"],
        "errorDiag": row["errorDiag"],
        "dispatchTime": row["dispatchTime"],
        "modificationTime": row["modificationTime"],
    }


def ranges_of_job(conn: Connection, panda_id: int, limit: int = 10_000) -> list[dict[str, Any]]:
    """The ranges a job holds or held, and those of the pool it is the job set of."""
    stmt = (
        select(event_ranges)
        .where((event_ranges.c.PandaID == panda_id) | (event_ranges.c.jobsetID == panda_id))
        .order_by(event_ranges.c.fileID, event_ranges.c.job_processID)
        .limit(limit)
    )
    return [_view(r) for r in conn.execute(stmt).mappings()]


def status_counts(conn: Connection, jobset_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Ranges per status of each job set."""
    stmt = (
        select(event_ranges.c.jobsetID, event_ranges.c.status, func.count())
        .where(event_ranges.c.jobsetID.in_(list(jobset_ids)))
        .group_by(event_ranges.c.jobsetID, event_ranges.c.status)
    )
    out: dict[int, dict[str, int]] = {int(j): {} for j in jobset_ids}
    for jobset, status, n in conn.execute(stmt):
        out[int(jobset)][str(status)] = int(n)
    return out


def statuses_for_jobs(conn: Connection, pairs: Sequence[tuple[int, int]]) -> dict[int, dict[str, Any]]:
    """``{PandaID: {eventRangeID: {status, error, dialog}}}`` for (jediTaskID, PandaID) pairs.

    A job's ranges are those it holds or held, and for the job that names the job set, the
    ranges still in its pool.
    """
    if len(pairs) > MAX_JOBS_PER_READ:
        raise TooLarge(f"more than {MAX_JOBS_PER_READ} jobs in one read")
    out: dict[int, dict[str, Any]] = {}
    for task_id, panda_id in pairs:
        stmt = select(event_ranges).where(
            event_ranges.c.jediTaskID == task_id,
            (event_ranges.c.PandaID == panda_id)
            | ((event_ranges.c.jobsetID == panda_id) & event_ranges.c.PandaID.is_(None)),
        )
        out[panda_id] = {
            range_id(r): {"status": r["status"], "error": r["errorCode"], "dialog": r["errorDiag"]}
            for r in conn.execute(stmt).mappings()
        }
    return out


def available_for(rt: Runtime, panda_id: int, jobset_id: int, task_id: int) -> int:
    """Ranges a consumer could take now: of its job's pool when the job is known (see
    :func:`pandawms.core.events.dispatch.pool_of`), else of the pool the caller names."""
    from_job = select(jobs.c.PandaID, jobs.c.jobsetID, jobs.c.jediTaskID, jobs.c.eventService).where(
        jobs.c.PandaID == panda_id
    )
    with read_tx(rt.engine) as conn:
        job = conn.execute(from_job).mappings().first() if panda_id >= 0 else None
        where: list[ColumnElement[bool]] = [event_ranges.c.status.in_(CLAIMABLE)]
        if job is not None:
            if job["eventService"] not in TAKES_RANGES:
                return 0
            where.append(pool_of(dict(job)))
        else:
            if jobset_id < 0:
                return 0
            where.append(event_ranges.c.jobsetID == jobset_id)
            if task_id >= 0:
                where.append(event_ranges.c.jediTaskID == task_id)
        return int(conn.execute(select(func.count()).select_from(event_ranges).where(*where)).scalar_one())


def statuses_for(rt: Runtime, pairs: Sequence[tuple[int, int]], who: Identity) -> dict[int, dict[str, Any]]:
    """:func:`statuses_for_jobs` for a caller who may read them: the owner of each job, production,
    a manager, or anyone in open mode; another user's job is refused."""
    open_mode = rt.settings.auth_mode == "open"
    ids = sorted({panda_id for _task, panda_id in pairs})
    with read_tx(rt.engine) as conn:
        owners: dict[int, Any] = {}
        for table in (jobs, jobs_archive):
            for row in conn.execute(
                select(table.c.PandaID, table.c.prodUserID).where(table.c.PandaID.in_(ids))
            ):
                owners[int(row.PandaID)] = row.prodUserID
        for panda_id in ids:
            if panda_id in owners and not may_kill(who, {"prodUserID": owners[panda_id]}, open_mode):
                raise Forbidden(f"PandaID={panda_id} is not yours: only its owner may read its event ranges")
        return statuses_for_jobs(conn, pairs)


def task_event_counts(conn: Connection, task_id: int) -> dict[str, int]:
    """A task's events by range status (``nEventsFinished``, ``nEventsReady``...) and in all
    (``nEvents``): the progress of an event-service task, in events."""
    size = event_ranges.c.lastEvent - event_ranges.c.startEvent + 1
    rows = conn.execute(
        select(event_ranges.c.status, func.sum(size))
        .where(event_ranges.c.jediTaskID == task_id)
        .group_by(event_ranges.c.status)
    ).all()
    out = {f"nEvents{str(status).capitalize()}": int(n or 0) for status, n in rows}
    if rows:
        out["nEvents"] = sum(int(n or 0) for _status, n in rows)
    return out


def job_range_counts(conn: Connection, panda_id: int) -> dict[str, int]:
    """Ranges per status that a job holds or held, or of the pool it names."""
    stmt = (
        select(event_ranges.c.status, func.count())
        .where((event_ranges.c.PandaID == panda_id) | (event_ranges.c.jobsetID == panda_id))
        .group_by(event_ranges.c.status)
    )
    return {str(status): int(n) for status, n in conn.execute(stmt)}


def has_event_ranges(rt: Runtime, jedi_task_id: int) -> bool:
    """Whether a task has event ranges (it is an event-service task that made jobs)."""
    with read_tx(rt.engine) as conn:
        found = conn.execute(
            select(event_ranges.c.rangeID).where(event_ranges.c.jediTaskID == jedi_task_id).limit(1)
        )
        return found.first() is not None
