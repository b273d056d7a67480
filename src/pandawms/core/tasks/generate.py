"""Turning a task into jobs (what JEDI's refiner and job generator do).

*Refine* makes the task's datasets and pseudo input files from its plan (registered -> defined
-> ready). *Generate* takes ready input files, ``files_per_job`` at a time, and makes one job
for each group: the job parameters filled from the template, output and log files named from
their templates with a new serial number, a queue from the task's site or the brokerage. The
files point at their job, the jobs are stored and activated and the task becomes ``running``,
all in one transaction. A task with a build step first gets its build job; its run jobs are
made once the library exists.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from pandawms.core.events.store import InputFile, create_ranges
from pandawms.core.jobs import cloning as clone_rules
from pandawms.core.jobs.submit import _apply_defaults, _insert, validate_jobs
from pandawms.core.jobs.transitions import log_statuses
from pandawms.core.queues.brokerage import broker
from pandawms.core.queues.catalogue import Queue, list_queues
from pandawms.core.queues.storages import storage_of
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.carousel import request_staging
from pandawms.core.tasks.inputs import InputFiles, NoInputFiles, resolve_inputs
from pandawms.core.tasks.params import (
    BadTaskParameter,
    EventService,
    TaskPlan,
    job_parameters,
    output_lfn,
    plan_task,
)
from pandawms.core.tasks.transitions import lock_task, move_task
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs, queues
from pandawms.db.schema_events import event_ranges
from pandawms.db.schema_tasks import task_dataset_rses, task_datasets, task_files, task_params, tasks
from pandawms.ddm.interface import DDMError, DDMNotConfigured, DIDNotFound
from pandawms.model.errors import Conflict, PandaError
from pandawms.model.event_states import EventServiceFlag, jumbo_enabled
from pandawms.model.identity import Identity
from pandawms.model.states import JobStatus
from pandawms.model.task_states import GENERATING, TaskStatus

log = logging.getLogger("pandawms.tasks")

T = TaskStatus
#: Seconds a task may find no queue for its jobs before it is declared exhausted.
EXHAUST_AFTER = 3600
INPUT_TYPES = ("pseudo_input", "input")


def owner(task: dict[str, Any]) -> Identity:
    """The identity jobs of a task are made with: its submitter."""
    roles = frozenset({"production"}) if task.get("prodRole") else frozenset()
    return Identity(dn=task.get("dn") or "", roles=roles)


def _base_name(plan: TaskPlan) -> str:
    """``user.jdoe.test1`` from the task or log dataset name (for the library's name)."""
    name = plan.name.rstrip("/")
    return name[:200]


def refine(
    conn: Connection,
    rt: Runtime,
    task: dict[str, Any],
    plan: TaskPlan,
    now: dt.datetime,
    contents: InputFiles | None = None,
) -> None:
    """Make the datasets and input files of a registered task; it ends ``ready``.

    ``contents`` are the files of its input datasets, read from the data management system
    before this transaction (a network call must not hold the task's lock).
    """
    task_id = int(task["jediTaskID"])

    def dataset(
        name: str,
        kind: str,
        stream: str,
        template: str | None,
        container: str | None = None,
        destination: str | None = None,
    ) -> int:
        result = conn.execute(
            task_datasets.insert().values(
                jediTaskID=task_id,
                datasetName=name[:255],
                containerName=(container or None) and container[:255],
                type=kind,
                streamName=stream,
                status="defined",
                destination=destination,
                template=template and template.replace("$JEDITASKID", str(task_id))[:1000],
                allowNoOutput=0,
                creationTime=now,
                modificationTime=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    rows: list[dict[str, Any]] = []
    common = {
        "jediTaskID": task_id,
        "status": "ready",
        "attemptNr": 0,
        "maxAttempt": plan.max_attempt,
        "failedAttempt": 0,
        "maxFailure": plan.max_attempt,
        "creationDate": now,
        "modificationTime": now,
    }
    if plan.input_streams:
        for part in contents or []:
            input_id = dataset(part.stream.dataset, "input", "IN", None)
            if part.rses:
                conn.execute(
                    task_dataset_rses.insert(),
                    [{"datasetID": input_id, "rse": rse[:64], "jediTaskID": task_id} for rse in part.rses],
                )
            lost = set(part.lost)
            for f in part.files:
                rows.append(
                    {
                        **common,
                        # No replica left anywhere: the file fails, the task goes on without it.
                        # On tape only: the data carousel makes it ready once it is on disk.
                        "status": "failed"
                        if f.name in lost
                        else ("staging" if part.needs_staging else "ready"),
                        "datasetID": input_id,
                        "type": "input",
                        "lfn": f.name,
                        "scope": f.scope,
                        "GUID": f.guid,
                        "fsize": f.size,
                        "checksum": f.checksum,
                        "chunkNr": len(rows) // plan.files_per_job,
                    }
                )
    else:
        input_id = dataset("pseudo_dataset", "pseudo_input", "IN", None)
        rows = [
            {
                **common,
                "datasetID": input_id,
                "type": "pseudo_input",
                "lfn": lfn,
                "startEvent": start,
                "endEvent": end,
                "chunkNr": index // plan.files_per_job,
            }
            for index, (lfn, start, end) in enumerate(plan.inputs)
        ]
    if rows:
        conn.execute(task_files.insert(), rows)
    for stream in plan.outputs:
        dataset(
            stream.dataset, "output", stream.stream, stream.template, stream.container, stream.destination
        )
    if plan.log is not None:
        dataset(plan.log.dataset, "log", "LOG", plan.log.template, plan.log.container, plan.log.destination)
    if plan.build is not None:
        lib_name = f"{_base_name(plan)}.lib"
        lib_template = f"{_base_name(plan)}.$JEDITASKID.lib._${{SN/P}}.lib.tgz"
        lib_id = dataset(lib_name, "lib", "LIB", lib_template)
        conn.execute(
            task_files.insert().values(
                jediTaskID=task_id,
                datasetID=lib_id,
                type="lib",
                lfn=output_lfn(lib_template, task_id, 0),
                status="ready",
                attemptNr=0,
                maxAttempt=plan.max_attempt,
                failedAttempt=0,
                maxFailure=plan.max_attempt,
                creationDate=now,
                modificationTime=now,
            )
        )
    template = plan.template.replace("$JEDITASKID", str(task_id))
    if plan.source_url:
        template = template.replace("${SURL}", plan.source_url)
    conn.execute(
        task_params.update().where(task_params.c.jediTaskID == task_id).values(jobParamsTemplate=template)
    )
    conn.execute(
        task_datasets.update()
        .where(task_datasets.c.jediTaskID == task_id)
        .values(status="ready", modificationTime=now)
    )
    lost_names = sorted({name for part in contents or [] for name in part.lost})
    reason = f"{len(rows)} input files"
    if lost_names:
        reason += f"; {len(lost_names)} failed, no replica in the DDM: {', '.join(lost_names)}"
    move_task(conn, task, T.DEFINED.value, now, reason=reason[:250])
    task["status"] = T.DEFINED.value
    staging = request_staging(conn, task, contents or [], now) if plan.input_streams else []
    if staging:
        ids = ", ".join(str(i) for i in staging)
        move_task(conn, task, T.STAGING.value, now, reason=f"input on tape: data carousel requests {ids}")
        task["status"] = T.STAGING.value
        return
    move_task(conn, task, T.READY.value, now)
    task["status"] = T.READY.value


def _endpoint(conn: Connection, site: str) -> str | None:
    """The storage endpoint outputs go to at ``site`` (the queue's first write endpoint)."""
    data = conn.execute(select(queues.c.data).where(queues.c.name == site)).scalar_one_or_none()
    if not data:
        return None
    try:
        spec = json.loads(data)
        astorages = spec.get("astorages") or {}
        for activity in ("pw", "write_lan", "pl"):
            names = astorages.get(activity) or []
            if names:
                return str(names[0])
    except (ValueError, AttributeError, TypeError):
        return None
    return None


def _input_endpoints(conn: Connection, task_id: int, site: str) -> dict[int, str]:
    """For each input dataset of the task, the RSE the queue reads it from (ddmEndPointIn).

    The first of the queue's read RSEs that holds every file the task uses of the dataset.
    """
    data = conn.execute(select(queues.c.data).where(queues.c.name == site)).scalar_one_or_none()
    try:
        spec = json.loads(data) if data else {}
    except ValueError:
        spec = {}
    reads = storage_of(site, spec if isinstance(spec, dict) else {}).read
    held: dict[int, set[str]] = {}
    for dataset_id, rse in conn.execute(
        select(task_dataset_rses.c.datasetID, task_dataset_rses.c.rse).where(
            task_dataset_rses.c.jediTaskID == task_id
        )
    ):
        held.setdefault(int(dataset_id), set()).add(str(rse))
    found = {}
    for dataset_id, rses in held.items():
        rse = next((r for r in reads if r in rses), None)
        if rse is not None:
            found[dataset_id] = rse
    return found


def _scope(dataset: str) -> str:
    parts = dataset.split(".")
    scope = ".".join(parts[:2]) if parts[0] in ("user", "group") and len(parts) > 1 else parts[0]
    return scope[:30]


def _near_data(conn: Connection, task_id: int, queue_list: Sequence[Queue]) -> tuple[list[Queue], str]:
    """The queues that read, for every input dataset of the task, an RSE holding it all."""
    wanted: dict[int, set[str]] = {}
    for dataset_id, rse in conn.execute(
        select(task_dataset_rses.c.datasetID, task_dataset_rses.c.rse).where(
            task_dataset_rses.c.jediTaskID == task_id
        )
    ):
        wanted.setdefault(int(dataset_id), set()).add(str(rse))
    if not wanted:
        return [], "no disk RSE holds all the input files (on tape only, or incomplete everywhere)"
    names = [q.name for q in queue_list]
    definitions = dict(
        conn.execute(select(queues.c.name, queues.c.data).where(queues.c.name.in_(names))).all()
    )
    near = []
    for queue in queue_list:
        try:
            spec = json.loads(definitions.get(queue.name) or "{}")
        except ValueError:
            continue
        reads = set(storage_of(queue.name, spec if isinstance(spec, dict) else {}).read)
        if all(reads & rses for rses in wanted.values()):
            near.append(queue)
    all_rses = ", ".join(sorted(set().union(*wanted.values())))[:150]
    return near, f"no queue reads the input data at {all_rses}"


def _choose_site(
    conn: Connection, plan: TaskPlan, queue_list: Sequence[Queue], probe: dict[str, Any], task_id: int
) -> tuple[str | None, str]:
    if plan.site:
        return plan.site.split(",")[0], ""
    candidates = [q for q in queue_list if q.name not in plan.excluded_sites]
    if plan.input_streams:
        candidates, why = _near_data(conn, task_id, candidates)
        if not candidates:
            return None, why
    ((site, why),) = broker(conn, candidates, [probe])
    return site, why


def _job(
    task: dict[str, Any],
    plan: TaskPlan,
    serial: int,
    attempt: int,
    site: str,
    transformation: str,
    label: str,
    params: str,
    outputs: list[tuple[str, str, str]],
    endpoint: str | None,
    inputs: Sequence[dict[str, Any]] = (),
    input_endpoints: dict[int, str] | None = None,
) -> dict[str, Any]:
    """A job as an attribute dict (``Files`` included); outputs are (lfn, type, dataset).

    ``inputs`` are the task's input file rows (with ``dataset``, their dataset's name);
    ``input_endpoints`` the RSE each input dataset is read from (by datasetID), which the
    pilot gets as ddmEndPointIn (kept as the file's ``ddd:<RSE>`` dispatch token).
    """
    where = input_endpoints or {}
    token = f"dst:{endpoint}" if endpoint else None
    files = [
        {
            "lfn": f["lfn"],
            "type": "input",
            "dataset": f["dataset"],
            "prodDBlock": f["dataset"],
            "dispatchDBlockToken": (
                f"ddd:{where[int(f['datasetID'])]}" if f.get("datasetID") in where else None
            ),
            "scope": f.get("scope"),
            "GUID": f.get("GUID"),
            "fsize": f.get("fsize"),
            "checksum": f.get("checksum"),
            "jediTaskID": task["jediTaskID"],
            "attemptNr": attempt,
        }
        for f in inputs
    ] + [
        {
            "lfn": lfn,
            "type": kind,
            "dataset": ds,
            "destinationDBlock": ds,
            "destinationDBlockToken": token,
            "scope": _scope(ds),
            "jediTaskID": task["jediTaskID"],
            "attemptNr": attempt,
        }
        for lfn, kind, ds in outputs
    ]
    return {
        "jobDefinitionID": task["jediTaskID"],
        "jobName": f"{plan.name.rstrip('/')}.{serial}"[:256],
        "transformation": transformation[:250],
        "prodSourceLabel": label,
        "prodUserID": task.get("dn"),
        "assignedPriority": task.get("currentPriority") or plan.priority,
        "currentPriority": task.get("currentPriority") or plan.priority,
        "attemptNr": attempt,
        "maxAttempt": int(task["maxAttempt"]),
        "jobParameters": params,
        "computingSite": site,
        "VO": plan.vo,
        "jediTaskID": task["jediTaskID"],
        "taskID": task["jediTaskID"],
        "reqID": task.get("reqID"),
        "jobsetID": task["jediTaskID"],
        "processingType": plan.processing_type,
        "cmtConfig": plan.architecture,
        "container_name": plan.container_name,
        "coreCount": plan.core_count,
        "minRamCount": plan.ram_count,
        "maxWalltime": plan.walltime,
        "workingGroup": plan.working_group,
        "homepackage": plan.trans_home,
        "AtlasRelease": plan.trans_uses,
        "destinationDBlock": outputs[0][2] if outputs else None,
        "prodDBlock": inputs[0]["dataset"] if inputs else None,
        "Files": files,
    }


def _next_serials(conn: Connection, task: dict[str, Any], count: int) -> list[int]:
    first = int(task["nextSerialNr"])
    conn.execute(
        tasks.update().where(tasks.c.jediTaskID == task["jediTaskID"]).values(nextSerialNr=first + count)
    )
    task["nextSerialNr"] = first + count
    return list(range(first, first + count))


def _datasets(conn: Connection, task_id: int) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(select(task_datasets).where(task_datasets.c.jediTaskID == task_id)).mappings():
        found.setdefault(row["type"], []).append(dict(row))
    return found


def generate(conn: Connection, rt: Runtime, task: dict[str, Any], plan: TaskPlan, now: dt.datetime) -> int:
    """Make jobs for the task's ready files (at most ``task_jobs_per_pass``); how many were made."""
    task_id = int(task["jediTaskID"])
    sets = _datasets(conn, task_id)
    template = conn.execute(
        select(task_params.c.jobParamsTemplate).where(task_params.c.jediTaskID == task_id)
    ).scalar_one()
    lib_lfn: str | None = None
    if plan.build is not None:
        lib = conn.execute(
            select(task_files).where(task_files.c.jediTaskID == task_id, task_files.c.type == "lib")
        )
        lib_row = dict(lib.mappings().one())
        if lib_row["status"] != "finished":
            if lib_row["status"] != "ready":
                return 0
            return _make_jobs(conn, rt, task, plan, sets, now, [], lib_row)
        lib_lfn = str(lib_row["lfn"])
    per_pass = plan.files_per_job if plan.gb_per_job is None else _FILES_PER_SIZED_JOB
    limit = rt.settings.task_jobs_per_pass * per_pass
    ready = [
        dict(r)
        for r in conn.execute(
            select(task_files)
            .where(
                task_files.c.jediTaskID == task_id,
                task_files.c.type.in_(INPUT_TYPES),
                task_files.c.status == "ready",
            )
            .order_by(task_files.c.fileID)
            .limit(limit)
        ).mappings()
    ]
    if not ready:
        return 0
    if plan.gb_per_job is not None:
        groups = group_by_size(ready, plan.gb_per_job * GIB)
    else:
        groups = [ready[i : i + plan.files_per_job] for i in range(0, len(ready), plan.files_per_job)]
    return _make_jobs(conn, rt, task, plan, sets, now, groups, None, template, lib_lfn)


#: Bytes in the GB of nGBPerJob (JEDI counts it in binary units).
GIB = 1024**3
#: Most files one job of an nGBPerJob task reads in (a bound for a pass over many tiny files).
_FILES_PER_SIZED_JOB = 200


def group_by_size(files: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    """Consecutive files in groups of at most ``limit`` bytes (a larger file is a job alone), each
    of at most :data:`_FILES_PER_SIZED_JOB` files: prun --nGBPerJob."""
    groups: list[list[dict[str, Any]]] = []
    size = 0
    for f in files:
        fsize = int(f.get("fsize") or 0)
        if groups and size + fsize <= limit and len(groups[-1]) < _FILES_PER_SIZED_JOB:
            groups[-1].append(f)
            size += fsize
        else:
            groups.append([f])
            size = fsize
    return groups


def _add_log(
    log_ds: dict[str, Any] | None,
    task_id: int,
    serial: int,
    outputs: list[tuple[str, str, str]],
    records: list[tuple[str, str, int]],
) -> None:
    """A job's log file: named from the task's log template, written to its log dataset."""
    if log_ds is None:
        return
    lfn = output_lfn(log_ds["template"], task_id, serial)
    outputs.append((lfn, "log", log_ds["datasetName"]))
    records.append((lfn, "log", int(log_ds["datasetID"])))


def _make_jobs(
    conn: Connection,
    rt: Runtime,
    task: dict[str, Any],
    plan: TaskPlan,
    sets: dict[str, list[dict[str, Any]]],
    now: dt.datetime,
    groups: list[list[dict[str, Any]]],
    lib_row: dict[str, Any] | None,
    template: str = "",
    lib_lfn: str | None = None,
) -> int:
    task_id = int(task["jediTaskID"])
    probe = {
        "prodSourceLabel": plan.label,
        "coreCount": plan.core_count,
        "minRamCount": plan.ram_count or 0,
        "maxWalltime": plan.walltime or 0,
    }
    site, why = _choose_site(conn, plan, list_queues(rt), probe, task_id)
    if site is None:
        frozen = task.get("frozenTime") or now
        values = {"errorDialog": why[:510], "frozenTime": frozen, "modificationTime": now}
        if (now - frozen).total_seconds() >= EXHAUST_AFTER and task["status"] in (T.READY, T.RUNNING):
            move_task(conn, task, T.EXHAUSTED.value, now, values, reason=why)
        else:
            conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(**values))
        return 0
    endpoint = _endpoint(conn, site)
    input_endpoints = _input_endpoints(conn, task_id, site) if plan.input_streams else {}
    log_ds = sets["log"][0] if sets.get("log") else None
    made: list[tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str, int]]]] = []
    if lib_row is not None and plan.build is not None:
        (serial,) = _next_serials(conn, task, 1)
        lib_ds = sets["lib"][0]
        outputs = [(str(lib_row["lfn"]), "output", lib_ds["datasetName"])]
        if log_ds is not None:
            outputs.append((output_lfn(log_ds["template"], task_id, serial), "log", log_ds["datasetName"]))
        params = (
            plan.build.job_parameters.replace("${IN}", plan.build.archive)
            .replace("${OUT}", str(lib_row["lfn"]))
            .replace("${SURL}", plan.source_url or "")
        )
        job = _job(
            task,
            plan,
            serial,
            int(lib_row["attemptNr"]),
            site,
            plan.build.trans_path,
            plan.build.label,
            params,
            outputs,
            endpoint,
        )
        made.append((job, [lib_row], [(str(lib_row["lfn"]), "lib", int(lib_ds["datasetID"]))]))
    elif plan.event_service is not None:
        made = _consumer_jobs(conn, task, plan, sets, groups, site, endpoint, template, lib_lfn)
    else:
        names = {int(ds["datasetID"]): str(ds["datasetName"]) for ds in sets.get("input", [])}
        serials = _next_serials(conn, task, len(groups))
        for serial, group in zip(serials, groups, strict=True):
            outputs = []
            records: list[tuple[str, str, int]] = []
            for ds in sets.get("output", []):
                lfn = output_lfn(ds["template"], task_id, serial)
                outputs.append((lfn, "output", ds["datasetName"]))
                records.append((lfn, "output", int(ds["datasetID"])))
            _add_log(log_ds, task_id, serial, outputs, records)
            attempt = max(int(f["attemptNr"]) for f in group)
            inputs = [(str(f["lfn"]), f["startEvent"], f["endEvent"]) for f in group]
            params = job_parameters(template, serial, inputs, attempt, lib_lfn)
            real_inputs = [
                {**f, "dataset": names.get(int(f["datasetID"]), "")} for f in group if f["type"] == "input"
            ]
            job = _job(
                task,
                plan,
                serial,
                attempt,
                site,
                plan.trans_path,
                plan.label,
                params,
                outputs,
                endpoint,
                real_inputs,
                input_endpoints,
            )
            made.append((job, group, records))
    cloning = _cloning(task) if lib_row is None else None
    if cloning is not None:
        made = _with_clones(made, *cloning)
    who = owner(task)
    typed = validate_jobs([m[0] for m in made], who, rt)
    for job in typed:
        _apply_defaults(job, who, rt, now)
        if job.get("eventService") == EventServiceFlag.CO_JUMBO:
            # held back while the task's jumbo jobs drain the ranges (core/tasks/jumbo.py)
            job["jobStatus"] = JobStatus.WAITING.value
    panda_ids = _insert(conn, typed)
    if cloning is not None:
        _set_jobsets(conn, panda_ids, cloning[1])
    log_statuses(conn, typed, None, now, reason=f"generated by task {task_id}")
    out_rows = []
    for panda_id, (_, group, records) in zip(panda_ids, made, strict=True):
        for f in group:
            conn.execute(
                task_files.update()
                .where(task_files.c.fileID == f["fileID"], task_files.c.status == "ready")
                .values(status="running", PandaID=panda_id, modificationTime=now)
            )
        for lfn, kind, dataset_id in records:
            if kind == "lib":
                continue
            out_rows.append(
                {
                    "jediTaskID": task_id,
                    "datasetID": dataset_id,
                    "type": kind,
                    "lfn": lfn,
                    "status": "defined",
                    "attemptNr": 0,
                    "maxAttempt": 1,
                    "failedAttempt": 0,
                    "maxFailure": 1,
                    "PandaID": panda_id,
                    "creationDate": now,
                    "modificationTime": now,
                }
            )
    if out_rows:
        conn.execute(task_files.insert(), out_rows)
    if plan.event_service is not None and lib_row is None:
        _make_pools(
            conn, task, plan.event_service, [(pid, m[1]) for pid, m in zip(panda_ids, made, strict=True)]
        )
    values = {"errorDialog": None, "frozenTime": None}
    if task["status"] == T.READY:
        move_task(conn, task, T.RUNNING.value, now, values, reason=f"{len(panda_ids)} jobs made")
        task["status"] = T.RUNNING.value
    else:
        conn.execute(
            tasks.update().where(tasks.c.jediTaskID == task_id).values(modificationTime=now, **values)
        )
    return len(panda_ids)


def _cloning(task: dict[str, Any]) -> tuple[str, int] | None:
    """(mode, clones per job) of a task with job cloning enabled (``mode:multiplicity:sites``)."""
    setting = task.get("jobCloning")
    if not setting:
        return None
    mode, _, rest = str(setting).partition(":")
    if mode not in (clone_rules.RUNONCE, clone_rules.STOREONCE):
        return None
    multiplicity = rest.partition(":")[0]
    return mode, int(multiplicity) if multiplicity.isdigit() and int(multiplicity) > 0 else 2


Made = list[tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str, int]]]]


def _with_clones(made: Made, mode: str, multiplicity: int) -> Made:
    """Each job followed by its clones, all marked with the cloning mode (JEDI's ``sc:<n>``).

    The first of each group carries the task's file bookkeeping; the clones only run. After the
    insert every group gets its own jobset (:func:`_set_jobsets`), the unit of the semaphore.
    """
    out: Made = []
    for job, group, records in made:
        job["specialHandling"] = clone_rules.header(job.get("specialHandling"), mode)
        out.append((job, group, records))
        out.extend((copy.deepcopy(job), [], []) for _ in range(multiplicity - 1))
    return out


def _set_jobsets(conn: Connection, panda_ids: list[int], multiplicity: int) -> None:
    """Give each group of clones the jobsetID of its first job."""
    for start in range(0, len(panda_ids), multiplicity):
        group = panda_ids[start : start + multiplicity]
        conn.execute(jobs.update().where(jobs.c.PandaID.in_(group)).values(jobsetID=group[0]))


def _consumer_jobs(
    conn: Connection,
    task: dict[str, Any],
    plan: TaskPlan,
    sets: dict[str, list[dict[str, Any]]],
    groups: list[list[dict[str, Any]]],
    site: str,
    endpoint: str | None,
    template: str,
    lib_lfn: str | None,
    count: int | None = None,
) -> list[tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str, int]]]]:
    """An event-service task's jobs: ``consumers`` jobs per group of input files, each with its
    log only (the outputs are the merge job's). The first consumer of a group carries its files;
    the group's job set is that consumer (:func:`_make_pools`)."""
    es = plan.event_service
    assert es is not None
    task_id = int(task["jediTaskID"])
    log_ds = sets["log"][0] if sets.get("log") else None
    names = {int(ds["datasetID"]): str(ds["datasetName"]) for ds in sets.get("input", [])}
    made: list[tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str, int]]]] = []
    per_group = count or es.consumers
    serials = iter(_next_serials(conn, task, len(groups) * per_group))
    for group in groups:
        attempt = max(int(f["attemptNr"]) for f in group)
        real_inputs = [
            {**f, "dataset": names.get(int(f["datasetID"]), "")} for f in group if f["type"] == "input"
        ]
        for index in range(per_group):
            serial = next(serials)
            outputs: list[tuple[str, str, str]] = []
            records: list[tuple[str, str, int]] = []
            _add_log(log_ds, task_id, serial, outputs, records)
            inputs = [(str(f["lfn"]), f["startEvent"], f["endEvent"]) for f in group]
            params = job_parameters(template, serial, inputs, attempt, lib_lfn)
            job = _job(
                task,
                plan,
                serial,
                attempt,
                site,
                plan.trans_path,
                plan.label,
                params,
                outputs,
                endpoint,
                real_inputs,
            )
            # consumers of a task with jumbo jobs are co-jumbo, as JEDI makes them
            job["eventService"] = int(
                EventServiceFlag.CO_JUMBO if jumbo_enabled(task) else EventServiceFlag.CONSUMER
            )
            job["processingType"] = es.processing_type or plan.processing_type
            made.append((job, group if index == 0 else [], records))
    return made


def _make_pools(
    conn: Connection,
    task: dict[str, Any],
    es: EventService,
    consumers: list[tuple[int, list[dict[str, Any]]]],
) -> None:
    """Give each group of consumers its job set (the first consumer's PandaID) and its ranges."""
    task_id = int(task["jediTaskID"])
    jobset: int | None = None
    members: dict[int, list[int]] = {}
    for panda_id, group in consumers:
        if group:
            jobset = panda_id
            files = [
                InputFile(
                    file_id=int(f["fileID"]),
                    lfn=str(f["lfn"]),
                    first_event=int(f["startEvent"] or 0),
                    last_event=int(f["endEvent"])
                    if f["endEvent"] is not None
                    else int(f["startEvent"] or 0) + int(es.events_per_file or 1) - 1,
                    guid=f.get("GUID"),
                    scope=f.get("scope"),
                    dataset_id=int(f["datasetID"]),
                )
                for f in group
            ]
            create_ranges(conn, task_id, panda_id, files, es.events_per_range, es.max_attempt)
        assert jobset is not None
        members.setdefault(jobset, []).append(panda_id)
    for jobset_id, ids in members.items():
        conn.execute(jobs.update().where(jobs.c.PandaID.in_(ids)).values(jobsetID=jobset_id))


def make_consumer(
    conn: Connection,
    rt: Runtime,
    task: dict[str, Any],
    plan: TaskPlan,
    group: list[dict[str, Any]],
    jobset: int,
    now: dt.datetime,
) -> int | None:
    """One more consumer for a job set whose consumers all ended with ranges left (they were
    lost, or failed); None while no queue fits."""
    task_id = int(task["jediTaskID"])
    probe = {
        "prodSourceLabel": plan.label,
        "coreCount": plan.core_count,
        "minRamCount": plan.ram_count or 0,
        "maxWalltime": plan.walltime or 0,
    }
    site, _why = _choose_site(conn, plan, list_queues(rt), probe, task_id)
    if site is None:
        return None
    template = conn.execute(
        select(task_params.c.jobParamsTemplate).where(task_params.c.jediTaskID == task_id)
    ).scalar_one()
    sets = _datasets(conn, task_id)
    ((job, _group, records),) = _consumer_jobs(
        conn, task, plan, sets, [group], site, _endpoint(conn, site), template, None, count=1
    )
    job["jobsetID"] = jobset
    who = owner(task)
    (typed,) = validate_jobs([job], who, rt)
    _apply_defaults(typed, who, rt, now)
    (panda_id,) = _insert(conn, [typed])
    log_statuses(conn, [typed], None, now, reason=f"consumer of job set {jobset} of task {task_id}")
    _record_outputs(conn, task_id, int(panda_id), records, now)
    return int(panda_id)


def make_jumbo_jobs(
    conn: Connection,
    rt: Runtime,
    task: dict[str, Any],
    plan: TaskPlan,
    count: int,
    now: dt.datetime,
    alive_by_site: dict[str, int] | None = None,
) -> int:
    """Up to ``count`` jumbo jobs for an event-service task (task/enable_jumbo_jobs): each takes
    ranges from every job set of the task, alongside the job sets' own consumers. No queue gets
    more than the task's ``numJumboJobsPerSite`` alive at once (``alive_by_site`` counts the
    jumbo jobs already alive there). How many were made."""
    es = plan.event_service
    assert es is not None
    task_id = int(task["jediTaskID"])
    per_site = int(task.get("numJumboJobsPerSite") or 0) or None
    alive = dict(alive_by_site or {})
    probe = {
        "prodSourceLabel": plan.label,
        "coreCount": plan.core_count,
        "minRamCount": plan.ram_count or 0,
        "maxWalltime": plan.walltime or 0,
    }
    queue_list = list_queues(rt)
    sets = _datasets(conn, task_id)
    log_ds = sets["log"][0] if sets.get("log") else None
    template = conn.execute(
        select(task_params.c.jobParamsTemplate).where(task_params.c.jediTaskID == task_id)
    ).scalar_one()
    who = owner(task)
    made = 0
    for _ in range(max(count, 0)):
        open_queues = [q for q in queue_list if per_site is None or alive.get(q.name, 0) < per_site]
        site, _why = _choose_site(conn, plan, open_queues, probe, task_id)
        if site is None or (per_site is not None and alive.get(site, 0) >= per_site):
            break  # every queue the task may use has its share of jumbo jobs
        (serial,) = _next_serials(conn, task, 1)
        outputs: list[tuple[str, str, str]] = []
        records: list[tuple[str, str, int]] = []
        _add_log(log_ds, task_id, serial, outputs, records)
        params = job_parameters(template, serial, [], 0)
        job = _job(
            task, plan, serial, 0, site, plan.trans_path, plan.label, params, outputs, _endpoint(conn, site)
        )
        job["eventService"] = int(EventServiceFlag.JUMBO)
        job["processingType"] = es.processing_type or plan.processing_type
        (typed,) = validate_jobs([job], who, rt)
        _apply_defaults(typed, who, rt, now)
        (panda_id,) = _insert(conn, [typed])
        log_statuses(conn, [typed], None, now, reason=f"jumbo job of task {task_id}")
        _record_outputs(conn, task_id, int(panda_id), records, now)
        alive[site] = alive.get(site, 0) + 1
        made += 1
    return made


def _record_outputs(
    conn: Connection, task_id: int, panda_id: int, records: list[tuple[str, str, int]], now: dt.datetime
) -> None:
    if not records:
        return
    conn.execute(
        task_files.insert(),
        [
            {
                "jediTaskID": task_id,
                "datasetID": dataset_id,
                "type": kind,
                "lfn": lfn,
                "status": "defined",
                "attemptNr": 0,
                "maxAttempt": 1,
                "failedAttempt": 0,
                "maxFailure": 1,
                "PandaID": panda_id,
                "creationDate": now,
                "modificationTime": now,
            }
            for lfn, kind, dataset_id in records
        ],
    )


def make_merge_job(
    conn: Connection, rt: Runtime, task: dict[str, Any], plan: TaskPlan, jobset: int, now: dt.datetime
) -> int | None:
    """The merge job of a job set whose ranges all finished: the task's outputs, made from the
    ranges' outputs (``${IN}``: their zip files), run by a pilot like any job. None while no
    queue fits (the next pass tries again)."""
    es = plan.event_service
    assert es is not None
    task_id = int(task["jediTaskID"])
    sets = _datasets(conn, task_id)
    probe = {
        "prodSourceLabel": plan.label,
        "coreCount": plan.core_count,
        "minRamCount": plan.ram_count or 0,
        "maxWalltime": plan.walltime or 0,
    }
    site, _why = _choose_site(conn, plan, list_queues(rt), probe, task_id)
    if site is None:
        return None
    endpoint = _endpoint(conn, site)
    (serial,) = _next_serials(conn, task, 1)
    outputs: list[tuple[str, str, str]] = []
    records: list[tuple[str, str, int]] = []
    for ds in sets.get("output", []) + sets.get("log", []):
        kind = "log" if ds["type"] == "log" else "output"
        lfn = output_lfn(ds["template"], task_id, serial)
        outputs.append((lfn, kind, ds["datasetName"]))
        records.append((lfn, kind, int(ds["datasetID"])))
    zips = sorted(
        {
            str(z)
            for z in conn.execute(
                select(event_ranges.c.zipLFN).where(
                    event_ranges.c.jediTaskID == task_id,
                    event_ranges.c.jobsetID == jobset,
                    event_ranges.c.zipLFN.is_not(None),
                )
            ).scalars()
        }
    )
    template = (
        es.merge_job_parameters
        or conn.execute(
            select(task_params.c.jobParamsTemplate).where(task_params.c.jediTaskID == task_id)
        ).scalar_one()
    )
    params = job_parameters(template.replace("$JEDITASKID", str(task_id)), serial, [], 0).replace(
        "${IN}", ",".join(zips)
    )
    trans = es.merge_trans_path or plan.trans_path
    job = _job(task, plan, serial, 0, site, trans, plan.label, params, outputs, endpoint)
    job["eventService"] = int(EventServiceFlag.MERGE)
    job["jobsetID"] = jobset
    who = owner(task)
    (typed,) = validate_jobs([job], who, rt)
    _apply_defaults(typed, who, rt, now)
    (merge_id,) = _insert(conn, [typed])
    log_statuses(conn, [typed], None, now, reason=f"merge of job set {jobset} of task {task_id}")
    _record_outputs(conn, task_id, int(merge_id), records, now)
    return int(merge_id)


def advance_task(rt: Runtime, task_id: int, contact_ddm: bool = True) -> int:
    """Refine a registered task and make jobs for what is ready, in one transaction; jobs made.

    A task whose stored parameters no longer make a plan (they were checked at submission, so
    only a code change can cause it) is moved to ``broken`` with the reason. A task over input
    datasets is refined only with ``contact_ddm`` (the task manager's pass, not the
    submission's: a request must not wait on the data management system).
    """
    try:
        contents = _contents(rt, task_id) if contact_ddm else None
        return _advance(rt, task_id, contents)
    except PandaError as exc:
        if isinstance(exc, Conflict):
            raise  # a concurrent change: the next pass tries again
        # A job the plan makes was refused (a name too long for its column...): the task cannot
        # go on by itself; it waits, exhausted, with the reason, for the user to retry it.
        now = utcnow()
        with write_tx(rt.engine) as conn:
            task = lock_task(conn, task_id)
            if task is not None and task["status"] in (T.READY, T.RUNNING):
                move_task(
                    conn,
                    task,
                    T.EXHAUSTED.value,
                    now,
                    {"errorDialog": exc.message[:510]},
                    reason="job refused",
                )
        log.warning("task %s: cannot make jobs: %s", task_id, exc.message)
        return 0


def _contents(rt: Runtime, task_id: int) -> InputFiles | None:
    """The files of a registered task's input datasets, read outside any transaction.

    None when there is nothing to read (another state, no input dataset, a plan that no longer
    parses: the locked pass deals with those) or when the read failed for now (the reason is
    shown on the task and the next pass tries again). A dataset that does not exist, or a
    server without data management, breaks the task with the reason.
    """

    with read_tx(rt.engine) as conn:
        row = conn.execute(
            select(tasks.c.status, task_params.c.taskParams)
            .join(task_params, task_params.c.jediTaskID == tasks.c.jediTaskID)
            .where(tasks.c.jediTaskID == task_id)
        ).first()
    if row is None or row[0] != T.REGISTERED:
        return None
    try:
        plan = plan_task(json.loads(row[1]), rt.settings.wn_script_base_url.rstrip("/"))
    except (BadTaskParameter, ValueError):
        return None
    if not plan.input_streams:
        return None
    try:
        return resolve_inputs(rt, plan)
    except (DDMNotConfigured, DIDNotFound, NoInputFiles) as exc:
        _stop_registered(rt, task_id, T.BROKEN.value, exc.message, "input not available")
    except DDMError as exc:
        _stop_registered(rt, task_id, None, exc.message, "")
        log.warning("task %s: cannot read its input datasets yet: %s", task_id, exc.message)
    return None


def _stop_registered(rt: Runtime, task_id: int, status: str | None, why: str, reason: str) -> None:
    """Break a registered task (``status``), or only show why it waits (None)."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = lock_task(conn, task_id)
        if task is None or task["status"] != T.REGISTERED:
            return
        values = {"errorDialog": why[:510], "modificationTime": now}
        if status is None:
            conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(**values))
        else:
            move_task(conn, task, status, now, values, reason=reason)


def _advance(rt: Runtime, task_id: int, contents: InputFiles | None = None) -> int:
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = lock_task(conn, task_id, skip_locked=rt.skip_locked)
        if task is None:
            return 0
        text = conn.execute(
            select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
        ).scalar_one()
        try:
            plan = plan_task(json.loads(text), rt.settings.wn_script_base_url.rstrip("/"))
        except (BadTaskParameter, ValueError) as exc:
            if task["status"] in (T.REGISTERED, T.DEFINED):
                move_task(
                    conn, task, T.BROKEN.value, now, {"errorDialog": str(exc)[:510]}, reason="bad parameters"
                )
            return 0
        if task["status"] == T.REGISTERED:
            if plan.input_streams and contents is None:
                return 0  # its files are read by the task manager's next pass
            refine(conn, rt, task, plan, now, contents)
        if TaskStatus(task["status"]) not in GENERATING:
            return 0
        return generate(conn, rt, task, plan, now)
