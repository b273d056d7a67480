"""Publishing the job status log: an outbox that needs no extra write on the hot path.

Every status change already writes a row to ``job_status_log`` in its own transaction; the
publisher sends those rows in id order and records how far it got in ``mq_cursor``. Delivery is
at least once (a batch is re-sent if the cursor update is lost). A row whose id is past a gap
is only sent once it is older than ``mq_lag`` seconds, so a transaction that took its id
earlier but committed later is not skipped.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import job_status_log, mq_cursor
from pandawms.messaging.stomp import BrokerAddress, StompConnection

CURSOR = "job_status"


def message(row: dict[str, Any]) -> bytes:
    """The JSON body of one status change."""
    stamp = row["modificationTime"].replace(tzinfo=dt.UTC).timestamp()
    return json.dumps(
        {
            "msg_type": "job_status",
            "jobid": row["PandaID"],
            "status": row["jobStatus"],
            "previous_status": row["oldStatus"],
            "computingsite": row["computingSite"],
            "prodsourcelabel": row["prodSourceLabel"],
            "attemptnr": row["attemptNr"],
            "timestamp": int(stamp),
            "reason": row["reason"],
        },
        separators=(",", ":"),
    ).encode()


def publish_status_changes(rt: Runtime, batch: int = 2000, max_batches: int = 50) -> int:
    """Send status changes past the cursor; returns how many were sent."""
    settings = rt.settings
    if not settings.mq_url:
        return 0
    address = BrokerAddress.parse(settings.mq_url)
    sent = 0
    connection: StompConnection | None = None
    try:
        for _ in range(max_batches):
            with write_tx(rt.engine) as conn:
                stmt = select(mq_cursor.c.last_id).where(mq_cursor.c.name == CURSOR)
                if rt.backend != "sqlite":
                    stmt = stmt.with_for_update()
                cursor = conn.execute(stmt).scalar()
                if cursor is None:
                    conn.execute(mq_cursor.insert().values(name=CURSOR, last_id=0))
                    cursor = 0
                rows = [
                    dict(r)
                    for r in conn.execute(
                        select(job_status_log)
                        .where(job_status_log.c.id > cursor)
                        .order_by(job_status_log.c.id)
                        .limit(batch)
                    ).mappings()
                ]
                ready = _contiguous(rows, int(cursor), utcnow() - dt.timedelta(seconds=settings.mq_lag))
                if not ready:
                    return sent
                if connection is None:
                    connection = StompConnection(address)
                connection.send_batch(settings.mq_destination, [message(r) for r in ready])
                conn.execute(
                    mq_cursor.update().where(mq_cursor.c.name == CURSOR).values(last_id=ready[-1]["id"])
                )
            sent += len(ready)
            if len(rows) < batch:
                break
    finally:
        if connection is not None:
            connection.close()
    return sent


def _contiguous(rows: list[dict[str, Any]], cursor: int, settled: dt.datetime) -> list[dict[str, Any]]:
    """Rows safe to send: up to the first gap whose later rows are still recent."""
    ready = []
    expected = cursor + 1
    for row in rows:
        if row["id"] != expected and row["modificationTime"] > settled:
            break
        ready.append(row)
        expected = row["id"] + 1
    return ready
