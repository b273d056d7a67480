"""Job submission: validate, fill the server's defaults, store and activate, in one transaction.

Either every job of a submission is stored or none is, so a client retrying after an error
never finds half of its batch already queued.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, text

from pandawms.core.jobs.transitions import log_statuses
from pandawms.core.queues.brokerage import NO_QUEUE, broker
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.bulk import insert_rows
from pandawms.db.engine import write_tx
from pandawms.db.schema import files, job_metadata, job_params, jobs
from pandawms.db.schema_tasks import tasks
from pandawms.model.errors import Forbidden, PandaError, TooLarge
from pandawms.model.identity import Identity, clean_user_id
from pandawms.model.jobspec import (
    FILE_ATTRIBUTES,
    FILE_TYPES,
    FILE_ZERO_ATTRIBUTES,
    JOB_ATTRIBUTES,
    JOB_COLUMNS,
    JOB_ZERO_ATTRIBUTES,
    PRODUCTION_LABELS,
    RETRY_RAISED_LABELS,
    USER_LABELS,
)
from pandawms.model.ownership import may_act
from pandawms.model.states import JobStatus
from pandawms.model.values import BadValue, coerce

#: Attributes the server sets itself, whatever the client sent.
SERVER_OWNED = frozenset(
    {
        "PandaID",
        "jobStatus",
        "creationTime",
        "modificationTime",
        "stateChangeTime",
        "modificationHost",
        "startTime",
        "endTime",
        "commandToPilot",
        "prodUserName",
        "lockedby",
    }
)
_VALID_JOB_LABELS = (None, "user", "managed")
#: Priorities the server gives jobs of ordinary users, as PanDA computes them before any
#: per-user offset: build jobs ("panda") ahead of the analysis jobs that wait for them.
USER_JOB_PRIORITY = 1000
BUILD_JOB_PRIORITY = 2000


def _typed_job(index: int, raw: Mapping[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = {}
    for attr in JOB_ATTRIBUTES:
        try:
            job[attr.name] = coerce(attr, raw.get(attr.name))
        except BadValue as exc:
            raise PandaError(f"job {index}: {exc}") from None
    raw_files = raw.get("Files") or []
    if not isinstance(raw_files, list):
        raise PandaError(f"job {index}: Files must be a list")
    typed_files = []
    for f_index, raw_file in enumerate(raw_files):
        if not isinstance(raw_file, Mapping):
            raise PandaError(f"job {index} file {f_index}: a file must be an object")
        typed: dict[str, Any] = {}
        for attr in FILE_ATTRIBUTES:
            try:
                typed[attr.name] = coerce(attr, raw_file.get(attr.name))
            except BadValue as exc:
                raise PandaError(f"job {index} file {f_index}: {exc}") from None
        if not typed["lfn"]:
            raise PandaError(f"job {index} file {f_index}: lfn is required")
        if typed["type"] not in FILE_TYPES:
            raise PandaError(
                f"job {index} file {f_index}: type must be one of {', '.join(sorted(FILE_TYPES))}, got {typed['type']!r}"
            )
        typed_files.append(typed)
    job["Files"] = typed_files
    return job


def _apply_defaults(job: dict[str, Any], who: Identity, rt: Runtime, now: Any) -> None:
    for name in SERVER_OWNED:
        job[name] = None
    label = job["prodSourceLabel"] or "managed"
    job["prodSourceLabel"] = label
    if label in USER_LABELS or not job["prodUserID"]:
        if who.dn:
            job["prodUserID"] = who.dn[:250]
    job["prodUserName"] = (clean_user_id(job["prodUserID"] or "") or who.name)[:60]
    job["VO"] = job["VO"] or "atlas"
    job["creationTime"] = job["modificationTime"] = job["stateChangeTime"] = now
    job["modificationHost"] = rt.node[:128]
    if job["assignedPriority"] is not None:
        job["currentPriority"] = job["assignedPriority"]
    for name in JOB_ZERO_ATTRIBUTES:
        if job[name] is None:
            job[name] = 0
    if label in RETRY_RAISED_LABELS:
        if job["maxAttempt"] == -1:
            job["maxAttempt"] = job["attemptNr"]
        elif job["maxAttempt"] <= job["attemptNr"]:
            job["maxAttempt"] = job["attemptNr"] + 2
    if not job["jobParameters"]:
        job["jobParameters"] = " "
    if job["computingSite"]:
        if job["relocationFlag"] != 2:
            job["relocationFlag"] = 1
        job["jobStatus"] = JobStatus.ACTIVATED.value
    else:
        job["jobStatus"] = JobStatus.DEFINED.value
    if not job["prodUserID"]:
        job["prodUserID"] = who.name[:250]
    if not job["resource_type"]:
        job["resource_type"] = resource_type_for(job["coreCount"], job["minRamCount"])
    if job["job_label"] is None:
        job["job_label"] = "user" if label in USER_LABELS else "managed"
    for f in job["Files"]:
        for name in FILE_ZERO_ATTRIBUTES:
            if f[name] is None:
                f[name] = 0
        if f["status"] is None or (f["type"] == "input" and f["status"] not in ("ready", "cached")):
            f["status"] = "unknown"
        f["modificationTime"] = now
        if f["type"] in ("output", "log"):
            name_output(f, job)


#: Resource types as the real server's default table defines them: (name, min cores, max cores,
#: min RAM per core MB, max RAM per core MB); the first that matches the job names it.
RESOURCE_TYPES: tuple[tuple[str, int, int | None, int | None, int | None], ...] = (
    ("SCORE", 1, 1, None, 2000),
    ("SCORE_HIMEM", 1, 1, 2001, None),
    ("MCORE", 2, None, None, 2000),
    ("MCORE_HIMEM", 2, None, 2001, None),
)
_USER_SCOPE = re.compile(r"^[a-z0-9_-]{1,26}$")


def resource_type_for(core_count: int | None, min_ram_count: int | None) -> str:
    """SCORE, SCORE_HIMEM, MCORE or MCORE_HIMEM from cores and minRamCount (MB for the job).

    As the real server: no core count means one core, 0 means "any" and counts as 8; the RAM
    compared is per core. A job no type matches is ``Undefined``.
    """
    cores = 1 if core_count is None else (8 if core_count == 0 else core_count)
    per_core = round((min_ram_count or 0) / max(cores, 1))
    for name, min_core, max_core, min_ram, max_ram in RESOURCE_TYPES:
        if cores < min_core or (max_core is not None and cores > max_core):
            continue
        if (min_ram is not None and per_core < min_ram) or (max_ram is not None and per_core > max_ram):
            continue
        return name
    return "Undefined"


def scope_of(dataset: str | None) -> str | None:
    """The Rucio scope a dataset name implies: ``user.<nick>``/``group.<name>`` or its first field.

    User and group scopes are lower case (the real server's default for ATLAS).
    """
    if not dataset or dataset in ("NULL",):
        return None
    if dataset.lower().startswith(("user", "group")):
        parts = dataset.lower().split(".")
        return ".".join(parts[:2])[:30] if len(parts) >= 2 else None
    return dataset.split(".")[0][:30] or None


def name_output(f: dict[str, Any], job: Mapping[str, Any]) -> None:
    """Give an output or log file what the pilot needs before it runs: a GUID and a scope.

    Every log file gets a fresh GUID (lower-case uuid4, as the real server's setup step makes)
    so the pilot can register its log tarball; an output without one gets one too. The scope
    comes from the file, else its dataset's name, else the user's scope ``user.<nickname>``.
    """
    if not f.get("GUID"):
        f["GUID"] = str(uuid.uuid4())
    if not f.get("scope"):
        scope = scope_of(f.get("dataset")) or scope_of(f.get("destinationDBlock"))
        nick = (job.get("prodUserName") or "").lower().replace(" ", "")
        if scope is None and job.get("prodSourceLabel") in USER_LABELS and _USER_SCOPE.match(nick):
            scope = f"user.{nick}"
        f["scope"] = scope


def validate_jobs(raw_jobs: Sequence[Mapping[str, Any]], who: Identity, rt: Runtime) -> list[dict[str, Any]]:
    """Type-check every job and apply the submission rules; raise on the first problem."""
    if not raw_jobs:
        raise PandaError("No jobs were submitted")
    limit = rt.settings.max_jobs_per_submit
    if len(raw_jobs) > limit:
        raise TooLarge(f"too many jobs in one submission: {len(raw_jobs)} > {limit}")
    typed = [_typed_job(i, raw) for i, raw in enumerate(raw_jobs)]
    for i, job in enumerate(typed):
        if (
            job["prodSourceLabel"] in PRODUCTION_LABELS
            and rt.settings.auth_mode == "strict"
            and not who.is_production
        ):
            raise Forbidden(
                f"{who.name} is missing production for prodSourceLabel={job['prodSourceLabel']} submission"
            )
        if job["job_label"] not in _VALID_JOB_LABELS:
            raise PandaError(f"job {i}: job_label={job['job_label']} is not valid (user or managed)")
    return typed


def ordinary_caller(rt: Runtime, who: Identity) -> bool:
    """Owner, task and priority are the server's to set for every caller but production.

    Open mode trusts every caller with everything (a laptop, the tests), so only strict mode
    enforces this, as it does the production-only labels.
    """
    return rt.settings.auth_mode == "strict" and not who.is_production


def apply_caller_rules(typed: list[dict[str, Any]], who: Identity) -> None:
    """What an ordinary user may not choose: whose job it is and how far ahead it runs.

    Like the real server, the owner (``prodUserID``, hence ``prodUserName``) is the caller's
    identity and the priority is the server's (1000 for analysis jobs, 2000 for build jobs);
    values the client sent are replaced, not refused, as panda-client always sends some.
    """
    for job in typed:
        job["prodUserID"] = who.dn[:250] or None
        priority = BUILD_JOB_PRIORITY if job["prodSourceLabel"] == "panda" else USER_JOB_PRIORITY
        job["assignedPriority"] = job["currentPriority"] = priority


def check_task_membership(conn: Connection, typed: Sequence[Mapping[str, Any]], who: Identity) -> None:
    """Refuse jobs that name a task (``jediTaskID``) the caller does not own.

    A job counted in someone else's task would change that task's progress and outputs, and
    be killed or retried with it. Checked inside the submission's transaction.
    """

    wanted = sorted({int(job["jediTaskID"]) for job in typed if job.get("jediTaskID")})
    if not wanted:
        return
    found = {
        int(row["jediTaskID"]): dict(row)
        for row in conn.execute(
            select(tasks.c.jediTaskID, tasks.c.userName, tasks.c.dn).where(tasks.c.jediTaskID.in_(wanted))
        ).mappings()
    }
    for task_id in wanted:
        task = found.get(task_id)
        if task is None:
            raise Forbidden(
                f"jediTaskID={task_id}: no such task; jobs may only join a task of their submitter"
            )
        if not may_act(who, task, False):
            raise Forbidden(f"jediTaskID={task_id} belongs to {task['userName']}, not to {who.name}")


def allocate_panda_ids(conn: Connection, count: int) -> list[int] | None:
    """Reserve ``count`` PandaIDs from PostgreSQL's sequence; None on other backends.

    With the IDs known up front the rows go in with a plain executemany, which psycopg
    pipelines; an INSERT ... RETURNING of hundreds of rows is one huge statement whose
    parameter conversion alone costs about a millisecond per job.
    """
    if conn.dialect.name != "postgresql":
        return None
    result = conn.execute(
        text("SELECT nextval(pg_get_serial_sequence('jobs', 'PandaID')) FROM generate_series(1, :n)"),
        {"n": count},
    )
    return sorted(int(row[0]) for row in result)


def _set_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """The columns of ``names`` that at least one row sets (the others are NULL anyway).

    A job row has ~150 columns and a typical job sets a third of them; binding only those
    roughly halves the cost of a 500-job submission (py-spy, benchmarks/README.md). The job
    and file tables have no column defaults, so leaving a column out stores the same NULL.
    """
    return [name for name in names if any(row.get(name) is not None for row in rows)]


def _insert(conn: Connection, typed: list[dict[str, Any]]) -> list[int]:
    names = _set_columns(typed, [a.name for a in JOB_COLUMNS if a.name != "PandaID"])
    rows = [{name: job[name] for name in names} for job in typed]
    panda_ids = allocate_panda_ids(conn, len(rows))
    if panda_ids is not None:
        for panda_id, row in zip(panda_ids, rows, strict=True):
            row["PandaID"] = panda_id
        insert_rows(conn, jobs, rows, ["PandaID", *names])
    else:
        result = conn.execute(insert(jobs).returning(jobs.c.PandaID, sort_by_parameter_order=True), rows)
        panda_ids = [int(r[0]) for r in result]
    file_rows = []
    for panda_id, job in zip(panda_ids, typed, strict=True):
        job["PandaID"] = panda_id
        for f in job["Files"]:
            f["PandaID"] = panda_id
            file_rows.append(f)
    if file_rows:
        used = _set_columns(file_rows, [c.name for c in files.columns if c.name != "rowID"])
        insert_rows(conn, files, [{k: f.get(k) for k in used} for f in file_rows], used)
    params = [{"PandaID": j["PandaID"], "jobParameters": j["jobParameters"]} for j in typed]
    insert_rows(conn, job_params, params, ["PandaID", "jobParameters"])
    metas = [{"PandaID": j["PandaID"], "metaData": j["metadata"]} for j in typed if j["metadata"]]
    insert_rows(conn, job_metadata, metas, ["PandaID", "metaData"])
    return panda_ids


def _assign_jobsets(conn: Connection, typed: list[dict[str, Any]]) -> None:
    """User jobs without a jobsetID share one: the first PandaID of their jobDefinitionID group."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for job in typed:
        if job["prodSourceLabel"] in RETRY_RAISED_LABELS and job["jobsetID"] is None:
            groups.setdefault(job["jobDefinitionID"], []).append(job)
    for members in groups.values():
        jobset = members[0]["PandaID"]
        ids = [j["PandaID"] for j in members]
        conn.execute(jobs.update().where(jobs.c.PandaID.in_(ids)).values(jobsetID=jobset))
        for job in members:
            job["jobsetID"] = jobset


def _place(rt: Runtime, conn: Connection, typed: list[dict[str, Any]]) -> None:
    """Broker the jobs that came without a computingSite (they stay defined if nothing fits)."""
    unplaced = [job for job in typed if not job["computingSite"]]
    if not unplaced:
        return
    for job, (site, why) in zip(unplaced, broker(conn, list_queues(rt), unplaced), strict=True):
        if site:
            job["computingSite"] = site
            job["jobStatus"] = JobStatus.ACTIVATED.value
        else:
            job["brokerageErrorCode"] = NO_QUEUE
            job["brokerageErrorDiag"] = why


def submit_jobs(rt: Runtime, raw_jobs: Sequence[Mapping[str, Any]], who: Identity) -> list[list[Any]]:
    """Store ``raw_jobs`` (attribute dicts with ``Files``) and answer as ``storeJobs`` does.

    Each answer is ``[PandaID, jobDefinitionID, {"jobsetID": n}]`` for user-style labels and
    ``[PandaID, jobDefinitionID, jobName]`` for production ones.
    """
    typed = validate_jobs(raw_jobs, who, rt)
    caller_rules = ordinary_caller(rt, who)
    if caller_rules:
        apply_caller_rules(typed, who)
    now = utcnow()
    for job in typed:
        _apply_defaults(job, who, rt, now)
    with write_tx(rt.engine) as conn:
        if caller_rules:
            check_task_membership(conn, typed, who)
        _place(rt, conn, typed)
        _insert(conn, typed)
        _assign_jobsets(conn, typed)
        log_statuses(conn, typed, None, now, reason="submitted", bulk=True)
    answers: list[list[Any]] = []
    for job in typed:
        if job["prodSourceLabel"] in RETRY_RAISED_LABELS:
            answers.append([job["PandaID"], job["jobDefinitionID"], {"jobsetID": job["jobsetID"]}])
        else:
            answers.append([job["PandaID"], job["jobDefinitionID"], job["jobName"]])
    return answers
