"""Killing jobs.

A job that is not running ends at once as ``cancelled`` (or ``closed`` for the codes that mean
"superseded"). A running job gets ``commandToPilot = tobekilled``; its pilot sees that in the
next heartbeat answer, stops the payload and reports ``failed``, which closes the job as
``cancelled``. Force codes end even running jobs at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_job
from pandawms.core.links import kill_workers_of_jobs
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import files, jobs
from pandawms.model.errors import TaskBufferError
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_kill
from pandawms.model.states import TERMINAL, JobStatus

#: Kill codes that close (superseded/expired) rather than cancel.
CLOSING_CODES = frozenset({2, 4, 10, 51, 55, 60})
#: Kill codes that end a running job at once instead of waiting for its pilot.
FORCE_CODES = frozenset({9, 52, 99})
_TASKBUFFER_CODE = {
    2: TaskBufferError.EXPIRE,
    3: TaskBufferError.ABORTED,
    7: TaskBufferError.RETRIED,
    8: TaskBufferError.REASSIGNED,
    10: TaskBufferError.FAST_REBROKERAGE,
}
_SUB_STATUS = {2: "toreassign", 51: "toreassign", 55: "taskdone"}

_COLUMNS = (*MOVE_COLUMNS, "commandToPilot", "prodUserID", "prodUserName", "workingGroup")


def kill_jobs(rt: Runtime, ids: Sequence[int], who: Identity, code: int | None = None) -> list[bool]:
    """Kill each job; one boolean per requested ID: True when the kill was taken."""
    open_mode = rt.settings.auth_mode == "open"
    results: list[bool] = []
    reason = f"killed by {who.name}"
    for panda_id in ids:
        now = utcnow()
        stmt = select(*[jobs.c[c] for c in _COLUMNS]).where(jobs.c.PandaID == panda_id)
        if rt.backend != "sqlite":
            stmt = stmt.with_for_update()
        with write_tx(rt.engine) as conn:
            row = conn.execute(stmt).mappings().first()
            if row is None or row["jobStatus"] in TERMINAL or not may_kill(who, dict(row), open_mode):
                results.append(False)
                continue
            job = dict(row)
            force = code in FORCE_CODES
            if job["commandToPilot"] == "tobekilled" and not force:
                results.append(True)
                continue
            values: dict[str, Any] = {
                "commandToPilot": "tobekilled",
                "taskBufferErrorCode": int(_TASKBUFFER_CODE.get(code or 0, TaskBufferError.KILL)),
                "taskBufferErrorDiag": reason[:300],
            }
            if code in _SUB_STATUS:
                values["jobSubStatus"] = _SUB_STATUS[code or 0]
            # Harvester workers still running the job are told to stop, in the same transaction.
            kill_workers_of_jobs(conn, [panda_id])
            if job["jobStatus"] == JobStatus.RUNNING.value and not force:
                conn.execute(jobs.update().where(jobs.c.PandaID == panda_id).values(**values))
            else:
                final = JobStatus.CLOSED.value if code in CLOSING_CODES else JobStatus.CANCELLED.value
                values["endTime"] = now
                move_job(conn, job, final, now, values, reason=reason)
                conn.execute(
                    files.update()
                    .where(files.c.PandaID == panda_id, files.c.type.in_(("output", "log")))
                    .values(status="failed", modificationTime=now)
                )
            results.append(True)
    return results
