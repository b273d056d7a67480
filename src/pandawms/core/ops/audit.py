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


def outcome_of(success: bool, data: Any) -> tuple[str, str]:
    """The audit outcome of a call that was answered, and a note when the answer alone hides it.

    ``success: false`` is a refusal (unknown task, not the owner, wrong status). A call answered
    with one boolean per target (job/kill) acted only where it says True: none is a refusal,
    some is ``partial``.
    """
    if not success:
        return "refused", ""
    if isinstance(data, list) and data and all(isinstance(item, bool) for item in data):
        refused = data.count(False)
        if refused == len(data):
            return "refused", "refused for every target"
        if refused:
            return "partial", f"refused for {refused} of {len(data)} targets"
    return "ok", ""


#: Target keys that name jobs (PandaIDs) in an audit row.
_JOB_KEYS = frozenset({"job_ids", "job_id", "jobId", "ids"})


def names_job(targets: str | None, panda_id: int) -> bool:
    """Whether an audit row's targets (``key=v1,v2 key=v``) name job ``panda_id``.

    Only job keys count: ``task_id=1`` or ``jobs=1`` (a count) is not about job 1.
    """
    wanted = str(panda_id)
    for part in (targets or "").split():
        key, _, values = part.partition("=")
        if key in _JOB_KEYS and wanted in values.split(","):
            return True
    return False


def search(
    rt: Runtime,
    panda_id: int | None = None,
    user: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 200,
) -> Sequence[dict[str, Any]]:
    """Audit rows, newest first, optionally about one job, by one user, or since a time.

    The job filter narrows in SQL by the ID's text and then keeps only rows whose job targets
    name it, reading on in pages until ``limit`` such rows are found.
    """
    stmt = select(audit_log).order_by(audit_log.c.id.desc())
    if panda_id is not None:
        stmt = stmt.where(audit_log.c.targets.like(f"%{int(panda_id)}%"))
    if user:
        stmt = stmt.where(audit_log.c.identity.like(f"%{user}%"))
    if since is not None:
        stmt = stmt.where(audit_log.c.time >= since)
    if panda_id is None:
        with read_tx(rt.engine) as conn:
            return [dict(r) for r in conn.execute(stmt.limit(limit)).mappings()]
    found: list[dict[str, Any]] = []
    page, last_id = 1000, None
    while len(found) < limit:
        paged = stmt if last_id is None else stmt.where(audit_log.c.id < last_id)
        with read_tx(rt.engine) as conn:
            rows = [dict(r) for r in conn.execute(paged.limit(page)).mappings()]
        found += [r for r in rows if names_job(r["targets"], panda_id)]
        if len(rows) < page:
            break
        last_id = rows[-1]["id"]
    return found[:limit]
