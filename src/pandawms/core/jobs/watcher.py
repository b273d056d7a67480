"""Failing jobs whose pilot went silent (PanDA's Watcher).

A job held by a pilot must heartbeat; one whose last heartbeat (``modificationTime``) is older
than the limit for its state is failed with the dispatcher error code that says why. A running
job that was killed but whose pilot never came back to hear it is closed as ``cancelled``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from pandawms.core.jobs.retry import retry_if_possible
from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_jobs
from pandawms.core.links import ended_worker_diag
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import files, jobs
from pandawms.model.errors import DispatcherError, TaskBufferError
from pandawms.model.states import JobStatus

BATCH = 500
#: supErrorCode when the Harvester worker of a silent job had already ended.
WORKER_ALREADY_DONE = 2
_WORKER_CHECKED = frozenset(
    {
        int(DispatcherError.LOST_HEARTBEAT),
        int(DispatcherError.HOLDING),
        int(DispatcherError.TRANSFERRING),
        int(DispatcherError.TIMEOUT),
    }
)


def _limits(rt: Runtime) -> dict[str, int]:
    s = rt.settings
    return {
        "sent": s.timeout_sent,
        "starting": s.timeout_running,
        "running": s.timeout_running,
        "holding": s.timeout_holding,
        "transferring": s.timeout_transferring,
    }


def _verdict(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status = job["jobStatus"]
    beat = job["modificationTime"]
    stamp = f"{beat:%Y-%m-%d %H:%M:%S}" if beat else "never"
    if job.get("commandToPilot") == "tobekilled":
        return JobStatus.CANCELLED.value, {
            "taskBufferErrorCode": int(TaskBufferError.KILL),
            "jobDispatcherErrorDiag": f"killed; pilot gave no answer since {stamp}",
        }
    if status == "sent":
        return JobStatus.FAILED.value, {
            "jobDispatcherErrorCode": int(DispatcherError.SEND_ERROR),
            "jobDispatcherErrorDiag": "Sent job didn't receive reply from pilot within the time limit",
        }
    if job.get("pilotErrorDiag") or job.get("exeErrorDiag"):
        code, diag = DispatcherError.RECOVERY, f"job recovery failed : last heartbeat at {stamp}"
    elif status == "holding":
        code, diag = DispatcherError.HOLDING, f"timeout in holding : last heartbeat at {stamp}"
    elif status == "transferring":
        code, diag = DispatcherError.TRANSFERRING, f"timeout in transferring : last heartbeat at {stamp}"
    else:
        code, diag = DispatcherError.LOST_HEARTBEAT, f"lost heartbeat : {stamp}"
    return JobStatus.FAILED.value, {"jobDispatcherErrorCode": int(code), "jobDispatcherErrorDiag": diag[:250]}


def fail_stale_jobs(rt: Runtime, now: dt.datetime | None = None) -> dict[str, int]:
    """Fail (or cancel) every job past its heartbeat limit; returns counts per new status."""
    now = now or utcnow()
    counts: dict[str, int] = {}
    columns = [
        jobs.c[c]
        for c in (
            *MOVE_COLUMNS,
            "modificationTime",
            "commandToPilot",
            "pilotErrorDiag",
            "exeErrorDiag",
            "endTime",
        )
    ]
    for status, limit in _limits(rt).items():
        cutoff = now - dt.timedelta(seconds=limit)
        while True:
            stmt = (
                select(*columns)
                .where(jobs.c.jobStatus == status, jobs.c.modificationTime < cutoff)
                .order_by(jobs.c.PandaID)
                .limit(BATCH)
            )
            if rt.skip_locked:
                stmt = stmt.with_for_update(skip_locked=True)
            with write_tx(rt.engine) as conn:
                stale = [dict(r) for r in conn.execute(stmt).mappings()]
                for job in stale:
                    final, values = _verdict(job)
                    if values.get("jobDispatcherErrorCode") in _WORKER_CHECKED:
                        ended = ended_worker_diag(conn, job["PandaID"])
                        if ended:
                            values.update(supErrorCode=WORKER_ALREADY_DONE, supErrorDiag=ended)
                    if job["endTime"] is None:
                        values["endTime"] = job["modificationTime"] or now
                    move_jobs(
                        conn,
                        [job],
                        final,
                        now,
                        values,
                        reason="watcher: " + values.get("jobDispatcherErrorDiag", "")[:200],
                    )
                    conn.execute(
                        files.update()
                        .where(
                            files.c.PandaID == job["PandaID"],
                            files.c.type.in_(("output", "log")),
                            files.c.status != "ready",
                        )
                        .values(status="failed", modificationTime=now)
                    )
                    counts[final] = counts.get(final, 0) + 1
                    if final == JobStatus.FAILED.value and retry_if_possible(
                        conn, job["PandaID"], now, rt.node, rules=rt.retry_rules
                    ):
                        counts["retried"] = counts.get("retried", 0) + 1
            if len(stale) < BATCH:
                break
    return counts
