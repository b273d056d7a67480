"""Consumers' reports on their event ranges (``updateEventRanges``, ``event/update_event_ranges``).

A report applies only to the range as its consumer holds it: the eventRangeID names the job and
the attempt, and the row must still be held (``sent`` or ``running``) by that job with that
attempt. A report about a range the consumer lost (returned to the pool after its job went
silent, then taken by another) matches nothing and answers False: the range is never counted
twice. Only final states are applied, as the real server does: ``running`` answers None.
A failed range goes back to the pool until it has failed ``maxAttempt`` times, then it is fatal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, case, func, select, update

from pandawms.core.events.dispatch import consumer_job
from pandawms.core.events.store import RangeKey, parse_range_id
from pandawms.core.jobs import pilot_binding
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_events import event_ranges
from pandawms.model.errors import PandaError, TooLarge
from pandawms.model.event_states import HELD, RangeStatus
from pandawms.model.identity import Identity

#: Reports one call may carry (Harvester sends at most 10,000 per job).
MAX_REPORTS = 20_000
#: Job states in which reports on its ranges are taken.
REPORTING = ("sent", "starting", "running", "transferring")
#: Reported states that are acknowledged and not stored (the real server's "skipped").
NOT_STORED = ("running", "transferring")


@dataclass
class Outcome:
    """Per report True (applied), False (refused) or None (not stored); a command per job."""

    returns: list[bool | None] = field(default_factory=list)
    commands: dict[str, str | None] = field(default_factory=dict)


def flatten(items: Any, version: int) -> list[dict[str, Any]]:
    """The reports of a request: a flat list (version 0), or chunks of ``eventRanges`` each with
    its ``zipFile`` or ``esOutput`` (versions 1 and 2), as the pilot's executors send them."""
    if not isinstance(items, list):
        raise PandaError("eventRanges must be a JSON list")
    flat: list[dict[str, Any]] = []
    for item in items:
        if version != 0 and isinstance(item, dict) and isinstance(item.get("eventRanges"), list):
            zip_file = item.get("zipFile") if isinstance(item.get("zipFile"), dict) else None
            for one in item["eventRanges"]:
                flat.append({**one, "zipFile": zip_file} if isinstance(one, dict) else one)
        else:
            flat.append(item)
        if len(flat) > MAX_REPORTS:
            raise TooLarge(f"more than {MAX_REPORTS} event range reports in one request")
    return flat


#: The integer columns of a range are 32-bit: a larger reported value is dropped, not refused.
_INT32 = 2**31 - 1


def _int_or_none(value: Any) -> int | None:
    """A reported whole number, or None when it is missing, not a number or out of range."""
    try:
        number = int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and -_INT32 <= number <= _INT32 else None


def _float_or_none(value: Any) -> float | None:
    """A reported time, or None when it is missing, not a number, infinite or NaN."""
    try:
        number = float(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) and abs(number) < 1e15 else None


def _details(report: dict[str, Any]) -> dict[str, Any]:
    zip_file = report.get("zipFile") or {}
    objstore = report.get("objstoreID", zip_file.get("objstoreID"))
    diag = report.get("errorDiag")
    return {
        "errorCode": _int_or_none(report.get("errorCode")),
        "errorDiag": str(diag)[:500] if diag is not None else None,
        "coreCount": _int_or_none(report.get("coreCount")),
        "cpuConsumptionTime": _float_or_none(report.get("cpuConsumptionTime")),
        "objstoreID": str(objstore)[:64] if objstore is not None else None,
        "pathConvention": _int_or_none(report.get("pathConvention", zip_file.get("pathConvention"))),
        "zipLFN": str(zip_file["lfn"])[:255] if zip_file.get("lfn") else None,
    }


def _held(key: RangeKey) -> Any:
    return (
        (event_ranges.c.jediTaskID == key.jedi_task_id)
        & (event_ranges.c.fileID == key.file_id)
        & (event_ranges.c.job_processID == key.process_id)
        & (event_ranges.c.PandaID == key.panda_id)
        & (event_ranges.c.attemptNr == key.attempt_nr)
        & event_ranges.c.status.in_(HELD)
    )


def _apply(conn: Connection, key: RangeKey, status: str, details: dict[str, Any]) -> bool:
    now = utcnow()
    values: dict[str, Any] = {**details, "modificationTime": now}
    if status == RangeStatus.FINISHED.value:
        values["status"] = status
    elif status == RangeStatus.FATAL.value:
        values["status"] = status
        values["failedAttempt"] = event_ranges.c.failedAttempt + 1
    else:  # failed: back to the pool, or fatal at the attempt limit
        values["failedAttempt"] = event_ranges.c.failedAttempt + 1
        values["status"] = case(
            (event_ranges.c.failedAttempt + 1 >= event_ranges.c.maxAttempt, RangeStatus.FATAL.value),
            else_=RangeStatus.FAILED.value,
        )
    result = conn.execute(update(event_ranges).where(_held(key)).values(**values))
    return result.rowcount == 1


def _count_events(conn: Connection, panda_ids: Iterable[int]) -> None:
    """The consumer's ``nEvents``: the events of the ranges it finished."""
    for panda_id in panda_ids:
        total = select(
            func.coalesce(func.sum(event_ranges.c.lastEvent - event_ranges.c.startEvent + 1), 0)
        ).where(event_ranges.c.PandaID == panda_id, event_ranges.c.status == RangeStatus.FINISHED.value)
        conn.execute(update(jobs).where(jobs.c.PandaID == panda_id).values(nEvents=total.scalar_subquery()))


def update_ranges(rt: Runtime, reports: list[Any], who: Identity) -> Outcome:
    """Apply ``reports`` (already flattened) in one transaction; see the module's docstring."""
    if len(reports) > MAX_REPORTS:
        raise TooLarge(f"more than {MAX_REPORTS} event range reports in one request")
    caller = pilot_binding.caller_for(rt, who)
    out = Outcome()
    finished_by: set[int] = set()
    with write_tx(rt.engine) as conn:
        job_rows: dict[int, dict[str, Any] | None] = {}
        for report in reports:
            if not isinstance(report, dict) or "eventRangeID" not in report or "eventStatus" not in report:
                out.returns.append(False)
                continue
            try:
                key = parse_range_id(report["eventRangeID"])
            except PandaError:
                out.returns.append(False)
                continue
            status = str(report["eventStatus"])
            if key.panda_id not in job_rows:
                job_rows[key.panda_id] = consumer_job(conn, key.panda_id)
            job = job_rows[key.panda_id]
            if job is None:
                out.commands[str(key.panda_id)] = "tobekilled"
                out.returns.append(False)
                continue
            out.commands.setdefault(str(key.panda_id), job["commandToPilot"] or None)
            if not pilot_binding.may_report(job, caller) or job["jobStatus"] not in REPORTING:
                out.returns.append(False)
                continue
            if status in NOT_STORED:
                out.returns.append(None)
                continue
            if status not in (RangeStatus.FINISHED.value, RangeStatus.FAILED.value, RangeStatus.FATAL.value):
                out.returns.append(False)
                continue
            applied = _apply(conn, key, status, _details(report))
            out.returns.append(applied)
            if applied and status == RangeStatus.FINISHED.value:
                finished_by.add(key.panda_id)
        _count_events(conn, sorted(finished_by))
    return out
