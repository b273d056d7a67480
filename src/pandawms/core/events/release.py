"""Ranges of lost consumers go back to the pool; ranges of killed work are cancelled.

A consumer is lost when its job no longer consumes: the watcher failed it after its heartbeat
timeout, or it ended without reporting every range it held. Each such range counts an attempt:
it returns to the pool (``ready``, held by nobody) or, at its attempt limit, becomes fatal, so a
range that kills every pilot that takes it does not circulate for ever.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, and_, exists, select, update

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_events import event_ranges
from pandawms.model.event_states import FINAL, HELD, RangeStatus

BATCH = 5000
#: Job states in which a consumer still holds its ranges.
ALIVE = ("sent", "starting", "running", "transferring")


def release_lost(rt: Runtime) -> tuple[int, int]:
    """Return held ranges whose job no longer consumes: (back in the pool, now fatal)."""
    consuming = exists().where(and_(jobs.c.PandaID == event_ranges.c.PandaID, jobs.c.jobStatus.in_(ALIVE)))
    returned = fatal = 0
    while True:
        with write_tx(rt.engine) as conn:
            ids = list(
                conn.execute(
                    select(event_ranges.c.rangeID)
                    .where(event_ranges.c.status.in_(HELD), ~consuming)
                    .limit(BATCH)
                ).scalars()
            )
            if not ids:
                return returned, fatal
            now = utcnow()
            base = and_(event_ranges.c.rangeID.in_(ids), event_ranges.c.status.in_(HELD))
            fatal += conn.execute(
                update(event_ranges)
                .where(base, event_ranges.c.failedAttempt + 1 >= event_ranges.c.maxAttempt)
                .values(
                    status=RangeStatus.FATAL.value,
                    failedAttempt=event_ranges.c.failedAttempt + 1,
                    errorDiag="lost with its consumer too often",
                    modificationTime=now,
                )
            ).rowcount
            returned += conn.execute(
                update(event_ranges)
                .where(base)
                .values(
                    status=RangeStatus.READY.value,
                    failedAttempt=event_ranges.c.failedAttempt + 1,
                    PandaID=None,
                    holder=None,
                    claimToken=None,
                    modificationTime=now,
                )
            ).rowcount


def cancel_ranges(conn: Connection, jedi_task_id: int, now: dt.datetime) -> int:
    """Cancel every range of a task not yet final; joins the caller's transaction."""
    return conn.execute(
        update(event_ranges)
        .where(event_ranges.c.jediTaskID == jedi_task_id, event_ranges.c.status.not_in(FINAL))
        .values(status=RangeStatus.CANCELLED.value, modificationTime=now)
    ).rowcount


def cancel_task_ranges(rt: Runtime, jedi_task_id: int) -> int:
    """Cancel every range of a task not yet final (the task was killed or aborted)."""
    with write_tx(rt.engine) as conn:
        return cancel_ranges(conn, jedi_task_id, utcnow())
