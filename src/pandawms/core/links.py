"""Where jobs meet Harvester workers: the link table and the command queue, as job code needs them.

A kill must tell Harvester to stop the workers still running the job, in the kill's own
transaction; the watcher must say when a silent job's worker had already ended. Both are job
decisions that read or write Harvester's tables. These primitives live here, below both the job
and the Harvester domains, so that jobs never import the Harvester package (which itself fails
the jobs of ended workers, and so builds on jobs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, and_, select

from pandawms.core.runtime import utcnow
from pandawms.db.schema_workers import harvester_commands as commands
from pandawms.db.schema_workers import harvester_rel_jobs_workers as rel
from pandawms.db.schema_workers import harvester_workers as workers
from pandawms.model.errors import PandaError

WORKER_FINAL = frozenset({"finished", "failed", "cancelled", "missed"})
SYNC_WORKERS_KILL = "SYNC_WORKERS_KILL"
#: Harvester's sweeper takes worker lists in shards of this size (as PanDA's worker sync sends).
SHARD = 100


def clean_text(text: str) -> str:
    """Free text as stored: NUL (which PostgreSQL cannot hold) becomes U+FFFD, nothing is lost."""
    return text.replace("\x00", "\ufffd")


def check_name(what: str, value: Any, limit: int) -> str:
    """A name (queue, harvesterID...): a non-empty string of at most ``limit`` characters, no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise PandaError(f"Argument error: {what} must be a non-empty string")
    if len(value) > limit:
        raise PandaError(f"Argument error: {what} is longer than {limit} characters")
    if "\x00" in value:
        raise PandaError(f"Argument error: {what} contains a NUL character")
    return value


def check_harvester_id(harvester_id: Any) -> str:
    """A harvesterID must be a short non-empty name."""
    return check_name("harvester_id", harvester_id, 50)


def live_workers_of_jobs(conn: Connection, panda_ids: Sequence[int]) -> dict[str, list[int]]:
    """Workers not yet ended that run any of ``panda_ids``, by harvesterID."""
    if not panda_ids:
        return {}
    stmt = (
        select(workers.c.harvesterID, workers.c.workerID)
        .select_from(
            rel.join(
                workers,
                and_(workers.c.harvesterID == rel.c.harvesterID, workers.c.workerID == rel.c.workerID),
            )
        )
        .where(rel.c.PandaID.in_(list(panda_ids)), workers.c.status.notin_(sorted(WORKER_FINAL)))
        .distinct()
    )
    found: dict[str, list[int]] = {}
    for harvester_id, worker_id in conn.execute(stmt):
        found.setdefault(harvester_id, []).append(int(worker_id))
    return {h: sorted(ids) for h, ids in found.items()}


def ended_worker_diag(conn: Connection, panda_id: int) -> str | None:
    """Why the job's pilot went silent, when its latest worker has already ended (else None).

    The watcher adds it (with supErrorCode 2, WORKER_ALREADY_DONE) so the failure shows that the
    batch slot was gone, not the pilot hung.
    """
    stmt = (
        select(workers.c.status, workers.c.endTime, workers.c.diagMessage)
        .select_from(
            rel.join(
                workers,
                and_(workers.c.harvesterID == rel.c.harvesterID, workers.c.workerID == rel.c.workerID),
            )
        )
        .where(rel.c.PandaID == panda_id)
        .order_by(workers.c.lastUpdate.desc())
        .limit(1)
    )
    row = conn.execute(stmt).first()
    if row is None or row[0] not in WORKER_FINAL:
        return None
    return f"worker already {row[0]} at {row[1]} with {row[2]}"[:250]


def queue_command(
    conn: Connection, harvester_id: str, command: str, params: Any = None, ack_requested: bool = True
) -> int:
    """Queue one command in the caller's transaction; returns its command_id."""
    check_harvester_id(harvester_id)
    now = utcnow()
    result = conn.execute(
        commands.insert().values(
            harvesterID=harvester_id,
            command=command,
            params=None if params is None else orjson.dumps(params).decode(),
            ack_requested=1 if ack_requested else 0,
            status="new",
            creation_date=now,
            status_date=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def kill_workers_of_jobs(conn: Connection, panda_ids: Sequence[int]) -> int:
    """Ask each Harvester to kill the live workers running ``panda_ids``; returns commands queued.

    Called in the kill's own transaction, so a kill and its worker commands commit together.
    """
    queued = 0
    for harvester_id, worker_ids in sorted(live_workers_of_jobs(conn, panda_ids).items()):
        for start in range(0, len(worker_ids), SHARD):
            queue_command(conn, harvester_id, SYNC_WORKERS_KILL, worker_ids[start : start + SHARD])
            queued += 1
    return queued
