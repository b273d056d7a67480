"""Task outputs in the data management system (what PanDA's Adder does), from the DDM outbox.

A finished task job stays ``holding`` while the registration of its outputs waits in the
outbox (:mod:`pandawms.core.jobs.ddm_outbox`, written with the pilot's final report). Here the
daemon carries the operations out:

* **register**: the task's output dataset (and its container, when the task names one) is made
  if needed, the job's output and log files are registered at the RSE the pilot wrote them to
  and attached to it; if the task asked for a destination (prun ``--destSE``) elsewhere, a
  replication rule of the dataset to it is added. The job then becomes ``finished``, or
  ``transferring`` until its files are at the destination (:func:`watch_rules`).
* **close**: when a task has ended, its output and log datasets are closed, so that its
  containers are complete.
* **reopen**: when such a task is retried or reactivated, they are opened again; its later
  registrations wait for that.

A call that fails for a reason that may pass (an outage, a timeout, a server error) is retried
with back-off (``ddm_retry_base`` doubling up to ``ddm_retry_max``) and the job waits, its
``ddmErrorDiag`` saying why; a refusal that a retry cannot change (unknown scope or RSE, no
permission) fails the job with the reason, and the job's retry rules apply. The operations run
outside any transaction; their outcome is written in one.

Rucio names: a task dataset whose name ends with ``/`` (prun's ``--outDS`` streams) is a
container; the files of one task go to the dataset ``<container>.<jediTaskID>`` inside it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from pandawms.core.jobs import ddm_outbox
from pandawms.core.jobs.ddm_outbox import CLOSE, DONE, FAILED, PENDING, REGISTER, REOPEN
from pandawms.core.jobs.retry import retry_if_possible
from pandawms.core.jobs.transitions import MOVE_COLUMNS, move_job
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.inputs import ddm_for
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import files, jobs
from pandawms.db.schema_ddm import ddm_outbox as outbox
from pandawms.db.schema_tasks import task_datasets
from pandawms.ddm.interface import DDM, DID, DDMError, DDMRefused, DIDNotFound, NewFile, RuleState, parse_did
from pandawms.model.errors import DdmError
from pandawms.model.retry_rules import RetryRule
from pandawms.model.states import JobStatus

log = logging.getLogger("pandawms.ddm")

#: Job columns the outcome of an operation reads (and move_job needs).
_JOB_COLUMNS = (*MOVE_COLUMNS, "jobSubStatus")


def rucio_names(dataset_name: str, container_name: str | None, task_id: int) -> tuple[DID | None, DID]:
    """(container or None, dataset) in Rucio for a task dataset."""
    if dataset_name.endswith("/"):
        container = parse_did(dataset_name)
        return container, DID(container.scope, f"{container.name}.{task_id}")
    dataset = parse_did(dataset_name)
    if container_name and container_name.rstrip("/") != dataset_name:
        return parse_did(container_name), dataset
    return None, dataset


def _task_datasets(task_id: int, rt: Runtime) -> dict[str, dict[str, Any]]:
    with read_tx(rt.engine) as conn:
        rows = conn.execute(
            select(task_datasets).where(
                task_datasets.c.jediTaskID == task_id, task_datasets.c.type.in_(("output", "log", "lib"))
            )
        ).mappings()
        return {str(r["datasetName"]): dict(r) for r in rows}


def _register(rt: Runtime, ddm: DDM, op: dict[str, Any]) -> dict[str, Any]:
    """Register one job's outputs; the rules its files now wait for (may be none)."""
    task_id = int(op["jediTaskID"])
    payload = json.loads(op["payload"])
    datasets = _task_datasets(task_id, rt)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in payload["files"]:
        groups.setdefault((entry["dataset"], entry["rse"]), []).append(entry)
    rules = []
    for (name, rse), entries in sorted(groups.items()):
        row = datasets.get(name)
        container, dataset = rucio_names(name, row.get("containerName") if row else None, task_id)
        ddm.create_dataset(dataset)
        if container is not None:
            ddm.create_container(container)
            ddm.attach(container, [dataset])
        ddm.add_files(
            dataset,
            rse,
            [
                NewFile(
                    name=e["lfn"],
                    size=int(e["fsize"]),
                    adler32=e.get("adler32"),
                    md5=e.get("md5"),
                    guid=e.get("guid"),
                    scope=e.get("scope") or dataset.scope,
                )
                for e in entries
            ],
        )
        destination = (row or {}).get("destination")
        if destination and destination != rse:
            rule_id = ddm.add_rule(dataset, destination)
            rules.append(
                {
                    "rule": rule_id,
                    "destination": destination,
                    "files": [f"{e.get('scope') or dataset.scope}:{e['lfn']}" for e in entries],
                }
            )
    return {**payload, "rules": rules}


def _close_or_reopen(rt: Runtime, ddm: DDM, op: dict[str, Any]) -> None:
    """Close (or reopen) every output and log dataset of a task that exists in Rucio."""
    task_id = int(op["jediTaskID"])
    for name, row in sorted(_task_datasets(task_id, rt).items()):
        if row["type"] == "lib":
            continue
        _, dataset = rucio_names(name, row.get("containerName"), task_id)
        try:
            if op["kind"] == CLOSE:
                ddm.close(dataset)
            else:
                ddm.reopen(dataset)
        except DIDNotFound:
            continue  # no job of the task registered anything in it


def _locked_job(conn: Connection, rt: Runtime, panda_id: int) -> dict[str, Any] | None:
    stmt = select(*[jobs.c[c] for c in _JOB_COLUMNS]).where(jobs.c.PandaID == panda_id)
    if rt.backend != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def _finish_op(conn: Connection, op: dict[str, Any], status: str, now: dt.datetime, **values: Any) -> None:
    conn.execute(
        outbox.update().where(outbox.c.id == op["id"]).values(status=status, modificationTime=now, **values)
    )


def _registered(rt: Runtime, op: dict[str, Any], outcome: dict[str, Any]) -> str:
    """Record a done registration; the job moves on (finished, or transferring)."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        _finish_op(conn, op, DONE, now, payload=json.dumps(outcome, separators=(",", ":")), lastError=None)
        job = _locked_job(conn, rt, int(op["PandaID"])) if op["PandaID"] is not None else None
        if (
            job is None
            or job["jobStatus"] != JobStatus.HOLDING
            or job["jobSubStatus"] != ddm_outbox.REGISTERING
        ):
            return "registered"  # the job was ended meanwhile (killed, timed out): nothing to move
        if outcome["rules"]:
            destinations = ", ".join(sorted({r["destination"] for r in outcome["rules"]}))
            move_job(
                conn,
                job,
                JobStatus.TRANSFERRING.value,
                now,
                {"jobSubStatus": ddm_outbox.WAITING_RULE, "ddmErrorDiag": None},
                reason=f"outputs registered, waiting for their replication to {destinations}"[:250],
            )
            return "transferring"
        move_job(
            conn,
            job,
            JobStatus.FINISHED.value,
            now,
            {"jobSubStatus": None, "ddmErrorDiag": None},
            reason="outputs registered",
        )
        return "finished"


def _refused(rt: Runtime, op: dict[str, Any], why: str) -> str:
    """A refusal for good: the operation failed, and so does its job (with the reason)."""
    now = utcnow()
    diag = f"output registration refused: {why}"[:500]
    with write_tx(rt.engine) as conn:
        _finish_op(conn, op, FAILED, now, lastError=why[:500])
        job = _locked_job(conn, rt, int(op["PandaID"])) if op["PandaID"] is not None else None
        if (
            job is None
            or job["jobSubStatus"] not in ddm_outbox.SERVER_HELD
            or job["jobStatus"]
            not in (
                JobStatus.HOLDING,
                JobStatus.TRANSFERRING,
            )
        ):
            return "refused"
        _fail_job(conn, job, diag, now, rt.retry_rules)
    log.warning("DDM operation %s (%s) refused: %s", op["id"], op["kind"], why)
    return "refused"


def _fail_job(
    conn: Connection, job: dict[str, Any], diag: str, now: dt.datetime, rules: Sequence[RetryRule]
) -> None:
    panda_id = int(job["PandaID"])
    conn.execute(
        files.update()
        .where(files.c.PandaID == panda_id, files.c.type.in_(("output", "log")))
        .values(status="failed", modificationTime=now)
    )
    move_job(
        conn,
        job,
        JobStatus.FAILED.value,
        now,
        {"jobSubStatus": None, "ddmErrorCode": int(DdmError.ADDER), "ddmErrorDiag": diag[:500]},
        reason="output registration failed",
    )
    retry_if_possible(conn, panda_id, now, "", rules=rules)


def backoff(settings: Any, attempts: int) -> int:
    """Seconds before the next try of an operation that failed ``attempts`` times."""
    base, cap = int(settings.ddm_retry_base), int(settings.ddm_retry_max)
    return int(min(cap, base * 2 ** min(attempts - 1, 30)))


def _postponed(rt: Runtime, op: dict[str, Any], why: str) -> str:
    """A failure that may pass: try again later; the waiting job says why (and stays alive)."""
    now = utcnow()
    attempts = int(op["attempts"]) + 1
    delay = backoff(rt.settings, attempts)
    with write_tx(rt.engine) as conn:
        conn.execute(
            outbox.update()
            .where(outbox.c.id == op["id"], outbox.c.status == PENDING)
            .values(
                attempts=attempts,
                nextAttempt=now + dt.timedelta(seconds=delay),
                lastError=why[:500],
                modificationTime=now,
            )
        )
        if op["PandaID"] is not None:
            # A job waiting on an outage is not stale: its modification time moves on.
            conn.execute(
                jobs.update()
                .where(jobs.c.PandaID == op["PandaID"], jobs.c.jobSubStatus == ddm_outbox.REGISTERING)
                .values(
                    modificationTime=now,
                    ddmErrorDiag=f"registration attempt {attempts} failed, next in {delay} s: {why}"[:500],
                )
            )
    log.warning("DDM operation %s (%s) failed, retry in %d s: %s", op["id"], op["kind"], delay, why)
    return "postponed"


def _due(rt: Runtime, limit: int) -> list[dict[str, Any]]:
    with read_tx(rt.engine) as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(outbox)
                .where(outbox.c.status == PENDING, outbox.c.nextAttempt <= utcnow())
                .order_by(outbox.c.id)
                .limit(limit)
            ).mappings()
        ]


#: What an operation waits for: earlier pending operations of the same task of these kinds.
_WAITS_FOR = {REGISTER: (REOPEN,), CLOSE: (REGISTER, REOPEN), REOPEN: (CLOSE,)}


def _must_wait(rt: Runtime, op: dict[str, Any]) -> bool:
    """Whether an earlier operation of the same task must be carried out first."""
    if op["jediTaskID"] is None:
        return False
    with read_tx(rt.engine) as conn:
        row = conn.execute(
            select(outbox.c.id)
            .where(
                outbox.c.jediTaskID == op["jediTaskID"],
                outbox.c.kind.in_(_WAITS_FOR.get(op["kind"], ())),
                outbox.c.status == PENDING,
                outbox.c.id < op["id"],
            )
            .limit(1)
        ).first()
    return row is not None


def process_outbox(rt: Runtime, ddm: DDM | None = None, limit: int = 500) -> dict[str, int]:
    """Carry out the due operations of the outbox, oldest first; counts by outcome."""
    counts: Counter[str] = Counter()
    ops = _due(rt, limit)
    if not ops:
        return {}
    source = ddm or ddm_for(rt)
    for op in ops:
        if _must_wait(rt, op):
            counts["waiting"] += 1
            continue  # e.g. a task's datasets are closed once its last outputs are in
        try:
            if op["kind"] == REGISTER:
                outcome = _register(rt, source, op)
                counts[_registered(rt, op, outcome)] += 1
            elif op["kind"] in (CLOSE, REOPEN):
                _close_or_reopen(rt, source, op)
                with write_tx(rt.engine) as conn:
                    _finish_op(conn, op, DONE, utcnow(), lastError=None)
                counts["closed" if op["kind"] == CLOSE else "reopened"] += 1
            else:
                counts[_refused(rt, op, f"unknown operation {op['kind']!r}")] += 1
        except DDMRefused as exc:
            counts[_refused(rt, op, exc.message)] += 1
        except DDMError as exc:
            counts[_postponed(rt, op, exc.message)] += 1
            if "cannot reach" in exc.message or "Cannot connect" in exc.message:
                break  # the system is down: the rest waits for the next pass
    return dict(counts)


def enqueue_close(conn: Connection, task_id: int, now: dt.datetime) -> None:
    """Queue the closing of a task's output datasets (when the task has ended)."""
    has_outputs = conn.execute(
        select(task_datasets.c.datasetID)
        .where(task_datasets.c.jediTaskID == task_id, task_datasets.c.type.in_(("output", "log")))
        .limit(1)
    ).first()
    if has_outputs is not None:
        ddm_outbox.enqueue(conn, CLOSE, {}, now, task_id=task_id)


def enqueue_reopen(conn: Connection, task_id: int, now: dt.datetime) -> None:
    """Queue the reopening of a task's datasets (retried after it ended), if they were closed."""
    closed = conn.execute(
        select(outbox.c.id).where(outbox.c.jediTaskID == task_id, outbox.c.kind == CLOSE).limit(1)
    ).first()
    if closed is not None:
        ddm_outbox.enqueue(conn, REOPEN, {}, now, task_id=task_id)


def _at_destination(ddm: DDM, rule: dict[str, Any]) -> tuple[bool, str]:
    """Whether every file of a job covered by ``rule`` is at its destination, and why not."""
    state = ddm.get_rule(rule["rule"])
    if state.state == RuleState.OK:
        return True, ""
    wanted: Sequence[str] = rule["files"]
    there = {
        f"{r.file.scope}:{r.file.name}" for r in ddm.list_replicas(wanted) if rule["destination"] in r.rses
    }
    if all(name in there for name in wanted):
        return True, ""
    why = f"rule {rule['rule']} to {rule['destination']} is {state.state.value}"
    if state.error:
        why += f": {state.error}"
    return False, why


def watch_rules(rt: Runtime, ddm: DDM | None = None, limit: int = 1000) -> dict[str, int]:
    """Finish the ``transferring`` jobs whose outputs have reached their destination."""
    with read_tx(rt.engine) as conn:
        waiting = [
            (int(pid), str(payload))
            for pid, payload in conn.execute(
                select(jobs.c.PandaID, outbox.c.payload)
                .join(outbox, outbox.c.PandaID == jobs.c.PandaID)
                .where(
                    jobs.c.jobStatus == JobStatus.TRANSFERRING.value,
                    jobs.c.jobSubStatus == ddm_outbox.WAITING_RULE,
                    outbox.c.kind == REGISTER,
                    outbox.c.status == DONE,
                )
                .order_by(jobs.c.PandaID)
                .limit(limit)
            )
        ]
    if not waiting:
        return {}
    source = ddm or ddm_for(rt)
    counts: Counter[str] = Counter()
    for panda_id, payload in waiting:
        try:
            checks = [_at_destination(source, rule) for rule in json.loads(payload).get("rules", [])]
        except DDMError as exc:
            counts["unknown"] += 1
            log.warning("job %d: cannot check its replication rules: %s", panda_id, exc.message)
            continue
        missing = [why for done, why in checks if not done]
        now = utcnow()
        with write_tx(rt.engine) as conn:
            job = _locked_job(conn, rt, panda_id)
            if (
                job is None
                or job["jobStatus"] != JobStatus.TRANSFERRING
                or job["jobSubStatus"] != ddm_outbox.WAITING_RULE
            ):
                continue
            if missing:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.PandaID == panda_id)
                    .values(ddmErrorDiag="; ".join(missing)[:500])
                )
                counts["transferring"] += 1
                continue
            move_job(
                conn,
                job,
                JobStatus.FINISHED.value,
                now,
                {"jobSubStatus": None, "ddmErrorDiag": None},
                reason="outputs replicated to the destination",
            )
            counts["finished"] += 1
    return dict(counts)
