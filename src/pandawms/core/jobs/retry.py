"""Server-side retry: a failed job with attempts left comes back as a new PandaID.

Whether it comes back is decided by the runtime's retry rules (``Runtime.retry_rules``, see
:mod:`pandawms.model.retry_rules`): only an error a new attempt can fix earns one. The rule that decided is written to the failed job's
status history, retried or not, so the monitor's job page says why.

The new job is a copy with ``attemptNr + 1``, ``parentID`` = the failed PandaID, cleared errors
and timestamps, outputs renamed for the new attempt (each with a new GUID), and it is activated
at the same queue. The failed job records where it went (``taskBufferErrorCode`` 106, "retried
as PandaID=N"). It all happens in the transaction that failed the job, so a retry is never lost
or doubled.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from pandawms.core.jobs.transitions import log_statuses
from pandawms.db.schema import files, job_params, job_status_log, jobs
from pandawms.model.errors import TaskBufferError
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ZERO_ATTRIBUTES
from pandawms.model.retry_rules import RetryRule, decide

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


def retry_candidate(job: dict[str, Any]) -> bool:
    """Failed, not killed, attempts left and no task (task jobs are retried by their task)."""
    return (
        job["jobStatus"] == "failed"
        and job.get("commandToPilot") != "tobekilled"
        and (job.get("attemptNr") or 0) < (job.get("maxAttempt") or 0)
        and not job.get("jediTaskID")
    )


def should_retry(job: dict[str, Any], rules: Sequence[RetryRule]) -> bool:
    """A candidate whose errors one of ``rules`` calls recoverable."""
    rule = decide(job, rules) if retry_candidate(job) else None
    return rule is not None and rule.action == "retry"


def _record(conn: Connection, job: dict[str, Any], reason: str) -> None:
    """Add what the retry rules decided to the reason of the row that failed the job.

    The failing move was logged in this same transaction; amending it keeps the history a list
    of real state changes (no failed -> failed rows) while the job page shows the rule.
    """
    last = conn.execute(
        select(job_status_log.c.id, job_status_log.c.reason)
        .where(job_status_log.c.PandaID == job["PandaID"])
        .order_by(job_status_log.c.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return
    text = f"{last.reason}; {reason}" if last.reason else reason
    conn.execute(job_status_log.update().where(job_status_log.c.id == last.id).values(reason=text[:250]))


def _renamed(lfn: str, attempt: int) -> str:
    return f"{_ATTEMPT_SUFFIX.sub('', lfn)}.{attempt}"[:4000]


def retry_if_possible(
    conn: Connection, panda_id: int, now: dt.datetime, node: str, *, rules: Sequence[RetryRule]
) -> int | None:
    """Clone the failed job ``panda_id`` for another attempt; returns the new PandaID or None.

    ``rules``: the runtime's retry rules (``rt.retry_rules``), which decide whether it may.
    """
    row = conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().first()
    if row is None or not retry_candidate(dict(row)):
        return None
    old = dict(row)
    rule: RetryRule | None = decide(old, rules)
    if rule is None or rule.action != "retry":
        why = f"retry rule {rule.name}" if rule is not None else "no retry rule matches"
        _record(conn, old, f"{why}: final, not retried")
        return None
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
                GUID=str(uuid.uuid4()),
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
            taskBufferErrorDiag=f"retried as PandaID={new_id} (retry rule {rule.name})"[:250],
        )
    )
    _record(
        conn,
        old,
        f"retry rule {rule.name} ({rule.source}={old.get(rule.source)}): retried as PandaID={new_id}",
    )
    log_statuses(
        conn,
        [{**new, "PandaID": new_id}],
        None,
        now,
        reason=f"retry {attempt} of PandaID={panda_id} by retry rule {rule.name}",
    )
    return new_id
