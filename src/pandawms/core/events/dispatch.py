"""Handing event ranges to consumers: never one range to two of them.

A claim picks ranges of the consumer's pool and marks them ``sent`` to that consumer with a
token of its own, in one transaction: on PostgreSQL and MariaDB the picked rows are locked with
``FOR UPDATE SKIP LOCKED`` (concurrent consumers take different rows instead of waiting), and the
marking ``UPDATE`` repeats the condition that the rows are still claimable, so even without row
locks a row two claims picked goes to one of them only. SQLite serializes write transactions
(``BEGIN IMMEDIATE``). The claim then reads back the rows carrying its token: exactly those it won.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Connection, select, update

from pandawms.core.jobs import pilot_binding
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_events import event_ranges
from pandawms.model.errors import TooLarge
from pandawms.model.event_states import CLAIMABLE, TAKES_RANGES, EventServiceFlag, RangeStatus
from pandawms.model.identity import Identity

#: Ranges one request may take (Harvester asks in chunks of a few thousand).
MAX_RANGES_PER_REQUEST = 10_000
#: Job states in which a consumer may take ranges.
CONSUMING = ("sent", "starting", "running")


def consumer_job(conn: Connection, panda_id: int) -> dict[str, Any] | None:
    """The columns of a job that decide whether and from which pool it takes ranges."""
    row = (
        conn.execute(
            select(
                jobs.c.PandaID,
                jobs.c.jobStatus,
                jobs.c.commandToPilot,
                jobs.c.eventService,
                jobs.c.jobsetID,
                jobs.c.jediTaskID,
                jobs.c.dispatchDN,
                jobs.c.dispatchRole,
            ).where(jobs.c.PandaID == panda_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def pool_of(job: dict[str, Any]) -> ColumnElement[bool]:
    """The ranges a consumer job takes from: its job set's (every job set of the task for a jumbo
    job). A job made outside a task (no ``jediTaskID``) takes from its job set alone."""
    if job["eventService"] == EventServiceFlag.JUMBO:
        return event_ranges.c.jediTaskID == job["jediTaskID"]
    pool = event_ranges.c.jobsetID == (job["jobsetID"] or job["PandaID"])
    if job["jediTaskID"] is not None:
        pool = pool & (event_ranges.c.jediTaskID == job["jediTaskID"])
    return pool


def for_consumer(row: dict[str, Any]) -> dict[str, Any]:
    """One range as the pilot and Harvester read it."""
    return {
        "eventRangeID": (
            f"{row['jediTaskID']}-{row['PandaID']}-{row['fileID']}-{row['job_processID']}-{row['attemptNr']}"
        ),
        "startEvent": row["startEvent"],
        "lastEvent": row["lastEvent"],
        "LFN": row["lfn"],
        "GUID": row["GUID"],
        "scope": row["scope"],
    }


def acquire_ranges(rt: Runtime, panda_id: int, n_ranges: int, who: Identity) -> list[dict[str, Any]]:
    """Up to ``n_ranges`` ranges of the pool of job ``panda_id``, now held by it.

    Nothing for a job that is not an event-service consumer, not dispatched or being killed (the
    pilot then ends its payload, as with the real server). In strict mode only the credential
    that took the job (or production, for production-dispatched jobs) may take its ranges.
    """
    if n_ranges > MAX_RANGES_PER_REQUEST:
        raise TooLarge(f"at most {MAX_RANGES_PER_REQUEST} event ranges per request")
    if n_ranges < 1:
        return []
    caller = pilot_binding.caller_for(rt, who)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        job = consumer_job(conn, panda_id)
        if job is None:
            return []
        pilot_binding.check(job, caller)
        if job["jobStatus"] not in CONSUMING or job["commandToPilot"] == "tobekilled":
            return []
        if job["eventService"] not in TAKES_RANGES:
            return []
        pool = pool_of(job)
        pick = (
            select(event_ranges.c.rangeID)
            .where(pool, event_ranges.c.status.in_(CLAIMABLE))
            .order_by(event_ranges.c.rangeID)
            .limit(n_ranges)
        )
        if rt.skip_locked:
            pick = pick.with_for_update(skip_locked=True)
        picked = list(conn.execute(pick).scalars())
        if not picked:
            return []
        token = str(uuid.uuid4())
        conn.execute(
            update(event_ranges)
            .where(event_ranges.c.rangeID.in_(picked), event_ranges.c.status.in_(CLAIMABLE))
            .values(
                status=RangeStatus.SENT.value,
                PandaID=panda_id,
                holder=who.owner[:250] or None,
                claimToken=token,
                attemptNr=event_ranges.c.attemptNr + 1,
                dispatchTime=now,
                modificationTime=now,
            )
        )
        won = (
            conn.execute(
                select(event_ranges)
                .where(event_ranges.c.claimToken == token)
                .order_by(event_ranges.c.rangeID)
            )
            .mappings()
            .all()
        )
    return [for_consumer(dict(r)) for r in won]
