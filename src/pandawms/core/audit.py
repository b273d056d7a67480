"""The audit trail: every state-changing user call, with identity, targets and outcome.

Pilot heartbeats and dispatch are not repeated here: each of their status changes is already
in the job status log with the worker node; this table answers "who killed job N".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import audit_log
from pandawms.model.identity import Identity


def record(
    rt: Runtime,
    who: Identity,
    method: str,
    targets: str,
    outcome: str,
    message: str = "",
    request_id: str = "",
) -> None:
    """Append one audit row (its own small transaction, after the call it describes)."""
    with write_tx(rt.engine) as conn:
        conn.execute(
            audit_log.insert().values(
                time=utcnow(),
                identity=(who.dn or "anonymous")[:250],
                auth_method=who.method[:16],
                remote=(who.remote_host or "")[:64],
                method=method[:100],
                targets=targets[:1000] or None,
                outcome=outcome[:16],
                message=message[:500] or None,
                request_id=request_id[:32] or None,
            )
        )


def describe_targets(kwargs: dict[str, Any]) -> str:
    """A short text naming what a call acted on (job IDs, task, counts)."""
    parts = []
    for key in ("job_ids", "job_id", "task_id", "jedi_task_id", "task_id_list", "jobId", "ids"):
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            shown = ",".join(str(v) for v in value[:50]) + (f",+{len(value) - 50}" if len(value) > 50 else "")
            parts.append(f"{key}={shown}")
        else:
            parts.append(f"{key}={value}")
    if "jobs" in kwargs and isinstance(kwargs["jobs"], list):
        parts.append(f"jobs={len(kwargs['jobs'])}")
    return " ".join(parts)


def search(
    rt: Runtime,
    panda_id: int | None = None,
    user: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 200,
) -> Sequence[dict[str, Any]]:
    """Audit rows, newest first, optionally about one job, by one user, or since a time."""
    stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if panda_id is not None:
        stmt = stmt.where(audit_log.c.targets.like(f"%{panda_id}%"))
    if user:
        stmt = stmt.where(audit_log.c.identity.like(f"%{user}%"))
    if since is not None:
        stmt = stmt.where(audit_log.c.time >= since)
    with read_tx(rt.engine) as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if panda_id is not None:
        wanted = str(panda_id)
        rows = [r for r in rows if wanted in (r["targets"] or "").replace("=", ",").split(",")]
    return rows
