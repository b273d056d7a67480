"""Server-side retry: a failed job with attempts left comes back as a new PandaID.

The new job is a copy with ``attemptNr + 1``, ``parentID`` = the failed PandaID, cleared errors
and timestamps, outputs renamed for the new attempt, and it is activated at the same queue.
The failed job records where it went (``taskBufferErrorCode`` 106, "retried as PandaID=N").
It all happens in the transaction that failed the job, so a retry is never lost or doubled.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Connection, insert, select

from pandawms.core.transitions import log_statuses
from pandawms.db.schema import files, job_params, jobs
from pandawms.model.errors import TaskBufferError
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ZERO_ATTRIBUTES

#: Pilot error codes that a new attempt would not fix (1144: the job was killed).
NO_RETRY_PILOT_CODES = frozenset({1144})
_RESET = (
    "creationTime",
    "modificationTime",
    "stateChangeTime",
    "startTime",
    "endTime",
    "commandToPilot",
    "transExitCode",
    "pilotErrorDiag",
    "exeErrorDiag",
    "supErrorDiag",
    "ddmErrorDiag",
    "brokerageErrorDiag",
    "jobDispatcherErrorDiag",
    "taskBufferErrorDiag",
    "cpuConsumptionUnit",
    "pilotTiming",
    "batchID",
    "pilotID",
    "schedulerID",
    "computingElement",
    "jobMetrics",
    "jobSubStatus",
    "actualCoreCount",
    "maxRSS",
    "maxVMEM",
    "maxSWAP",
    "maxPSS",
    "avgRSS",
    "avgVMEM",
    "avgSWAP",
    "avgPSS",
    "totRCHAR",
    "totWCHAR",
    "totRBYTES",
    "totWBYTES",
    "rateRCHAR",
    "rateWCHAR",
    "rateRBYTES",
    "rateWBYTES",
    "memory_leak",
    "memory_leak_x2",
    "meanCoreCount",
    "hs06sec",
    "gco2_regional",
    "gco2_global",
    "cpuConversion",
)
_ATTEMPT_SUFFIX = re.compile(r"\.\d+$")


def should_retry(job: dict[str, Any]) -> bool:
    """Failed, not killed, attempts left, and an error a new attempt might fix."""
    return (
        job["jobStatus"] == "failed"
        and job.get("commandToPilot") != "tobekilled"
        and (job.get("attemptNr") or 0) < (job.get("maxAttempt") or 0)
        and (job.get("pilotErrorCode") or 0) not in NO_RETRY_PILOT_CODES
        and not job.get("jediTaskID")  # task jobs are retried by their task, file by file
    )


def _renamed(lfn: str, attempt: int) -> str:
    return f"{_ATTEMPT_SUFFIX.sub('', lfn)}.{attempt}"[:4000]


def retry_if_possible(conn: Connection, panda_id: int, now: dt.datetime, node: str) -> int | None:
    """Clone the failed job ``panda_id`` for another attempt; returns the new PandaID or None."""
    row = conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().first()
    if row is None or not should_retry(dict(row)):
        return None
    old = dict(row)
    attempt = (old["attemptNr"] or 0) + 1
    new = {k: v for k, v in old.items() if k != "PandaID"}
    for name in _RESET:
        new[name] = 0 if name in JOB_ZERO_ATTRIBUTES else None
    for name in JOB_ZERO_ATTRIBUTES:
        if name.endswith("ErrorCode"):
            new[name] = 0
    new.update(
        attemptNr=attempt,
        parentID=panda_id,
        creationTime=now,
        modificationTime=now,
        stateChangeTime=now,
        modificationHost=node[:128],
        jobStatus="activated" if old["computingSite"] else "defined",
        cpuConsumptionTime=0,
        nEvents=0,
        dispatchDN=None,
        dispatchRole=None,
        dispatchNode=None,
    )
    new_id = int(conn.execute(insert(jobs).returning(jobs.c.PandaID), [new]).scalar_one())
    file_rows = []
    for f in conn.execute(
        select(files).where(files.c.PandaID == panda_id).order_by(files.c.rowID)
    ).mappings():
        copy = {name: f[name] for name in FILE_ATTRIBUTE_NAMES if name != "rowID"}
        copy.update(PandaID=new_id, modificationTime=now, attemptNr=attempt)
        if f["type"] in ("output", "log"):
            copy.update(
                lfn=_renamed(f["lfn"], attempt),
                status="unknown",
                GUID=None,
                fsize=0,
                checksum=None,
                md5sum=None,
            )
        file_rows.append(copy)
    if file_rows:
        conn.execute(insert(files), file_rows)
    params = conn.execute(select(job_params.c.jobParameters).where(job_params.c.PandaID == panda_id)).first()
    conn.execute(insert(job_params).values(PandaID=new_id, jobParameters=params[0] if params else " "))
    conn.execute(
        jobs.update()
        .where(jobs.c.PandaID == panda_id)
        .values(
            taskBufferErrorCode=int(TaskBufferError.RETRIED),
            taskBufferErrorDiag=f"retried as PandaID={new_id}",
        )
    )
    log_statuses(
        conn, [{**new, "PandaID": new_id}], None, now, reason=f"retry {attempt} of PandaID={panda_id}"
    )
    return new_id
