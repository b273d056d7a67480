"""Commands for Harvester instances: queued by the server, polled and acknowledged by Harvester.

Harvester cannot be called; it polls ``acquire_commands``. A command waits as ``new`` until its
instance polls, is handed out exactly once (row locks make two concurrent polls take different
commands), and is then either gone (no acknowledgement asked) or ``retrieved`` until Harvester
acknowledges it, which removes it. The command names and parameter shapes are Harvester's own:
``SYNC_WORKERS_KILL`` with a list of workerIDs goes to its sweeper, ``KILL_WORKERS`` with a
query (status, computingSite, computingElement, submissionHost lists) likewise.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import select

from pandawms.core.links import (
    SHARD,
    SYNC_WORKERS_KILL,
    check_harvester_id,
    check_name,
    queue_command,
)
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_workers import harvester_commands as commands
from pandawms.db.schema_workers import harvester_workers as workers
from pandawms.model.errors import PandaError

KILL_WORKERS = "KILL_WORKERS"
MAX_COMMANDS_PER_POLL = 1000


def sweep_queue(
    rt: Runtime,
    queue: str,
    status_list: list[str],
    ce_list: list[str] | str,
    submission_host_list: list[str] | str,
) -> list[str]:
    """Ask every instance with workers at ``queue`` to kill them (filtered); returns those instances."""
    check_name("panda_queue", queue, 128)
    params = {
        "status": status_list,
        "computingSite": [queue],
        "computingElement": ce_list,
        "submissionHost": submission_host_list,
    }
    with write_tx(rt.engine) as conn:
        found = [
            str(r[0])
            for r in conn.execute(
                select(workers.c.harvesterID).where(workers.c.computingSite == queue).distinct()
            )
        ]
        for harvester_id in sorted(found):
            queue_command(conn, harvester_id, KILL_WORKERS, params, ack_requested=False)
    return sorted(found)


def acquire(rt: Runtime, harvester_id: str, n_commands: int) -> list[dict[str, Any]]:
    """Hand out the oldest ``n_commands`` new commands of an instance, each only once."""
    check_harvester_id(harvester_id)
    if not 1 <= n_commands <= MAX_COMMANDS_PER_POLL:
        raise PandaError(f"Argument error: n_commands must be between 1 and {MAX_COMMANDS_PER_POLL}")
    stmt = (
        select(commands)
        .where(commands.c.harvesterID == harvester_id, commands.c.status == "new")
        .order_by(commands.c.command_id)
        .limit(n_commands)
    )
    if rt.skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    elif rt.backend != "sqlite":
        stmt = stmt.with_for_update()  # SQLite's write transaction already excludes other polls
    now = utcnow()
    with write_tx(rt.engine) as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        if not rows:
            return []
        acked = [r["command_id"] for r in rows if r["ack_requested"]]
        one_shot = [r["command_id"] for r in rows if not r["ack_requested"]]
        if acked:
            conn.execute(
                commands.update()
                .where(commands.c.command_id.in_(acked), commands.c.status == "new")
                .values(status="retrieved", status_date=now)
            )
        if one_shot:
            conn.execute(commands.delete().where(commands.c.command_id.in_(one_shot)))
    return [
        {
            "command_id": r["command_id"],
            "command": r["command"],
            "params": None if r["params"] is None else orjson.loads(r["params"]),
            "ack_requested": bool(r["ack_requested"]),
            "creation_date": r["creation_date"].isoformat(),
        }
        for r in rows
    ]


def acknowledge(rt: Runtime, command_ids: Sequence[int]) -> int:
    """Remove commands Harvester has acted on; returns how many there were."""
    if len(command_ids) > MAX_COMMANDS_PER_POLL:
        raise PandaError(f"Argument error: at most {MAX_COMMANDS_PER_POLL} command_ids per call", 413)
    if not command_ids:
        return 0
    with write_tx(rt.engine) as conn:
        return int(
            conn.execute(commands.delete().where(commands.c.command_id.in_(list(command_ids)))).rowcount
        )


def pending(rt: Runtime, harvester_id: str | None = None) -> list[dict[str, Any]]:
    """Commands not yet acknowledged, for operators and tests."""
    stmt = select(commands).order_by(commands.c.command_id)
    if harvester_id is not None:
        stmt = stmt.where(commands.c.harvesterID == harvester_id)
    with read_tx(rt.engine) as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


#: Harvester gets this long to notice by itself that a worker's pilot has finished...
SYNC_DISCOVERY = dt.timedelta(minutes=60)
#: ...and a worker it was told about is not named again before this.
SYNC_RETRY = dt.timedelta(minutes=30)
SYNC_BATCH = 10000


def sync_workers(rt: Runtime, now: dt.datetime | None = None) -> int:
    """Tell each Harvester to kill workers whose pilot finished long ago while it still counts
    them as alive (PanDA's worker synchronization); returns the number of workers named."""
    now = now or utcnow()
    stmt = (
        select(workers.c.harvesterID, workers.c.workerID)
        .where(
            workers.c.status.in_(("submitted", "ready", "running", "idle")),
            workers.c.pilotStatus == "finished",
            workers.c.pilotEndTime < now - SYNC_DISCOVERY,
            (workers.c.pilotStatusSyncTime.is_(None)) | (workers.c.pilotStatusSyncTime < now - SYNC_RETRY),
        )
        .order_by(workers.c.harvesterID, workers.c.workerID)
        .limit(SYNC_BATCH)
    )
    if rt.skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    by_harvester: dict[str, list[int]] = defaultdict(list)
    with write_tx(rt.engine) as conn:
        for harvester_id, worker_id in conn.execute(stmt):
            by_harvester[harvester_id].append(int(worker_id))
        for harvester_id, worker_ids in sorted(by_harvester.items()):
            for start in range(0, len(worker_ids), SHARD):
                shard = worker_ids[start : start + SHARD]
                queue_command(conn, harvester_id, SYNC_WORKERS_KILL, shard, ack_requested=False)
                conn.execute(
                    workers.update()
                    .where(workers.c.harvesterID == harvester_id, workers.c.workerID.in_(shard))
                    .values(pilotStatusSyncTime=now)
                )
    return sum(len(ids) for ids in by_harvester.values())
