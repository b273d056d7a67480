"""Writing data-management operations to the outbox, in the caller's transaction.

The state change that needs Rucio (a job's outputs to register, a task's datasets to close)
and the operation that carries it out commit together, so a crash or a Rucio outage between
the two can never lose a registration; the daemon carries the operations out
(:mod:`pandawms.core.tasks.outputs`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, select

from pandawms.db.schema_ddm import ddm_outbox

REGISTER = "register"
CLOSE = "close"
REOPEN = "reopen"
PENDING, DONE, FAILED = "pending", "done", "failed"

#: jobSubStatus of a job the server holds while its outputs are registered, and while a
#: replication rule to the task's destination is being satisfied.
REGISTERING = "ddm_registering"
WAITING_RULE = "ddm_waiting_rule"
SERVER_HELD = frozenset({REGISTERING, WAITING_RULE})


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    now: dt.datetime,
    panda_id: int | None = None,
    task_id: int | None = None,
) -> None:
    """Queue one operation, due at once."""
    conn.execute(
        ddm_outbox.insert().values(
            kind=kind,
            jediTaskID=task_id,
            PandaID=panda_id,
            payload=json.dumps(payload, separators=(",", ":")),
            status=PENDING,
            attempts=0,
            nextAttempt=now,
            creationTime=now,
            modificationTime=now,
        )
    )


def has_registration(conn: Connection, panda_id: int) -> bool:
    """Whether the outputs of this job were already handed to the outbox (a repeated report)."""
    row = conn.execute(
        select(ddm_outbox.c.id)
        .where(ddm_outbox.c.PandaID == panda_id, ddm_outbox.c.kind == REGISTER)
        .limit(1)
    ).first()
    return row is not None
