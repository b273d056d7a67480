"""Operator commands on single jobs: reassign to another queue, and a command for the pilot.

``reassign`` takes jobs that no pilot holds yet (pending, defined, assigned, waiting, throttled,
activated) back to ``defined`` without a queue and places them again: at the named queue when
one is given, else by the brokerage at once (a job nothing fits waits in ``defined`` with the
brokerage's reason, and the daemon's brokerage pass tries again). Both steps are moves of the
job state table, in one transaction per job, so a job a pilot takes meanwhile is left alone.

``set_command`` stores a command in ``commandToPilot``; the pilot gets it in the answer to its
next heartbeat (core/jobs/heartbeat.py), which then clears it with :func:`consume_once`, so it is
delivered once. ``tobekilled`` is the exception: a kill stays until the pilot reports the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_jobs
from pandawms.core.queues.brokerage import NO_QUEUE, broker, misfit
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_kill
from pandawms.model.states import TERMINAL

#: Statuses a job can be reassigned from: no pilot has it yet.
REASSIGNABLE = frozenset({"pending", "defined", "assigned", "waiting", "throttled", "activated"})
#: Longest command for the pilot (the real client's limit).
MAX_COMMAND = 250
TOBEKILLED = "tobekilled"

_COLUMNS = (
    *MOVE_COLUMNS,
    "prodUserID",
    "prodUserName",
    "coreCount",
    "minRamCount",
    "maxWalltime",
    "commandToPilot",
)


def _lock(conn: Connection, rt: Runtime, panda_id: int, columns: Sequence[str]) -> dict[str, Any] | None:
    stmt = select(*[jobs.c[c] for c in columns]).where(jobs.c.PandaID == panda_id)
    if rt.backend != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def reassign_jobs(rt: Runtime, ids: Sequence[int], who: Identity, site: str | None = None) -> list[bool]:
    """Reassign each job; one boolean per ID: True when the job went back to brokerage or to ``site``."""
    open_mode = rt.settings.auth_mode == "open"
    queue_list = list_queues(rt, fresh=True)
    target = next((q for q in queue_list if q.name == site), None) if site else None
    results: list[bool] = []
    for panda_id in ids:
        now = utcnow()
        with write_tx(rt.engine) as conn:
            job = _lock(conn, rt, panda_id, _COLUMNS)
            if (
                job is None
                or job["jobStatus"] not in REASSIGNABLE
                or not may_kill(who, job, open_mode)
                or job["commandToPilot"] == TOBEKILLED
                or (site is not None and target is None)
            ):
                results.append(False)
                continue
            if target is not None and misfit(target, job):
                results.append(False)
                continue
            reason = f"reassigned by {who.name}"
            cleared = {"computingSite": None, "brokerageErrorCode": 0, "brokerageErrorDiag": None}
            if job["jobStatus"] != "defined":
                move_jobs(conn, [job], "defined", now, cleared, reason=reason)
            else:
                conn.execute(
                    jobs.update().where(jobs.c.PandaID == panda_id).values(modificationTime=now, **cleared)
                )
            job.update(cleared, jobStatus="defined")
            chosen: str | None
            if target is not None:
                chosen, why = target.name, ""
            else:
                ((chosen, why),) = broker(conn, queue_list, [job])
            if chosen:
                move_jobs(
                    conn, [job], "activated", now, {"computingSite": chosen}, reason=f"{reason} to {chosen}"
                )
            else:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.PandaID == panda_id)
                    .values(brokerageErrorCode=NO_QUEUE, brokerageErrorDiag=why)
                )
            results.append(True)
    return results


def set_command(rt: Runtime, panda_id: int, command: str) -> tuple[bool, str]:
    """Store a command for the pilot of a live job; (success, message) as the real server answers."""
    if not command or len(command) > MAX_COMMAND or any(ord(c) < 32 for c in command):
        return False, f"command must be 1 to {MAX_COMMAND} printable characters"
    with write_tx(rt.engine) as conn:
        job = _lock(conn, rt, panda_id, ("PandaID", "jobStatus", "commandToPilot"))
        if job is None:
            return False, f"PandaID={panda_id} not found in active jobs"
        if job["jobStatus"] in TERMINAL:
            return False, f"PandaID={panda_id} is already {job['jobStatus']}"
        if job["commandToPilot"] == TOBEKILLED and command != TOBEKILLED:
            return False, f"PandaID={panda_id} is being killed"
        conn.execute(
            jobs.update()
            .where(jobs.c.PandaID == panda_id)
            .values(commandToPilot=command, modificationTime=utcnow())
        )
    return True, f"command={command} is set to PandaID={panda_id}"


def consume_once(conn: Connection, panda_id: int, command: str | None) -> None:
    """After a heartbeat answer carried ``command``: clear it unless it is a kill."""
    if command and command != TOBEKILLED:
        conn.execute(
            jobs.update()
            .where(jobs.c.PandaID == panda_id, jobs.c.commandToPilot == command)
            .values(commandToPilot=None)
        )
