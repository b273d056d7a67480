"""Tasks: submission and the user commands (kill, finish, pause, resume, retry, ...).

A submitted task is checked completely (:mod:`pandawms.core.tasks.params`), stored as
``registered`` with its parameters, and then refined and given its first jobs by
:mod:`pandawms.core.tasks.generate` right away; the task manager daemon does the rest. Commands
answer the way JEDI's do (a code in ``data``: 0 registered, 2 unknown task, 3 not the owner,
4 not possible in the task's status) and act at once, each in one transaction; jobs a command
must stop are killed right after the task's move is committed, so no new job can appear in
between.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from pandawms.core.jobs.kill import kill_jobs
from pandawms.core.jobs.submit import USER_JOB_PRIORITY, ordinary_caller
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks import sandbox as cache_files
from pandawms.core.tasks.generate import advance_task
from pandawms.core.tasks.outputs import enqueue_reopen
from pandawms.core.tasks.params import BadTaskParameter, TaskPlan, plan_task
from pandawms.core.tasks.transitions import lock_task, log_task_status, move_task
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_tasks import task_files, task_params, tasks
from pandawms.ddm import DDMNotConfigured
from pandawms.ddm.rucio import RucioConfig
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_act
from pandawms.model.task_states import ACTIVE, ALLOWED_MOVES, FINAL, TaskStatus, super_status

log = logging.getLogger("pandawms.tasks")

T = TaskStatus

#: Codes in ``data`` of task command replies (JEDI's numbering).
OK, NOT_FOUND, NOT_OWNER, BAD_STATUS = 0, 2, 3, 4
#: task/submit codes: 2 a task of that name is active, 4 refused.
DUPLICATE, REFUSED = 2, 4
#: Kill code for jobs ended by their task (PanDA's "kill by JEDI").
KILL_BY_TASK = 50
#: Retry parameters a user may change (pbook retry newOpts).
RETRY_CHANGEABLE = frozenset(
    {
        "site",
        "excludedSite",
        "includedSite",
        "maxAttempt",
        "ramCount",
        "maxWalltime",
        "coreCount",
        "currentPriority",
    }
)


@dataclass(frozen=True)
class Reply:
    """What a task call answers: success, message, and the code or value in ``data``."""

    success: bool
    message: str
    data: Any


def _base_url(rt: Runtime) -> str:
    return rt.settings.wn_script_base_url.rstrip("/")


def load_plan(rt: Runtime, params_text: str) -> TaskPlan:
    """The plan of a stored task (its parameters were checked at submission)."""
    return plan_task(json.loads(params_text), _base_url(rt))


def _check_sites(rt: Runtime, plan: TaskPlan) -> None:
    if plan.site is None:
        return
    known = {q.name for q in list_queues(rt, fresh=True)}
    for name in plan.site.split(","):
        if name not in known:
            raise BadTaskParameter("site", f"no queue named {name!r} is known to this server")


def _check_cache_files(conn: Connection, plan: TaskPlan, rt: Runtime) -> None:
    for name in plan.cache_files:
        try:
            cache_files.path_for_serving(rt, name)
        except PandaError:
            raise BadTaskParameter(
                "buildSpec.archiveName" if plan.build and name == plan.build.archive else "jobParameters",
                f"sandbox {name[:100]!r} is not in the cache (upload it with file_server/upload_cache_file first)",
            ) from None
    cache_files.touch(conn, plan.cache_files, utcnow())


def _check_ddm(rt: Runtime, plan: TaskPlan) -> None:
    """A task over input datasets needs the data management system configured (no call is made)."""
    if not plan.input_streams:
        return

    try:
        RucioConfig.from_settings(rt.settings)
    except DDMNotConfigured as exc:
        stream = plan.input_streams[0]
        raise BadTaskParameter(
            stream.param,
            f"input dataset {stream.dataset[:100]!r} cannot be resolved: {exc.message}; "
            "or give the files with pfnList (prun --pfnList), or use noInput",
        ) from None


def _cloning_setting(params: dict[str, Any]) -> str | None:
    """``mode:multiplicity:sites`` from a task's ``useJobCloning`` parameter, as JEDI's refiner
    reads it (``nSitesPerJob`` 2 and ``nEsConsumers`` as many by default)."""
    mode = params.get("useJobCloning")
    if mode not in ("runonce", "storeonce"):
        return None

    def number(key: str, default: int) -> int:
        value = params.get(key)
        return value if isinstance(value, int) and 1 <= value <= 100 else default

    sites = number("nSitesPerJob", 2)
    return f"{mode}:{number('nEsConsumers', sites)}:{sites}"


def submit_task(rt: Runtime, params: Any, who: Identity, parent_tid: int | None = None) -> Reply:
    """Register a task and start it; ``data`` is the new jediTaskID (or a refusal code)."""
    try:
        plan = plan_task(params, _base_url(rt))
        if plan.label == "managed" and rt.settings.auth_mode == "strict" and not who.is_production:
            raise BadTaskParameter("prodSourceLabel", "managed tasks need the production role")
        _check_sites(rt, plan)
        _check_ddm(rt, plan)
    except BadTaskParameter as exc:
        return Reply(False, exc.message, REFUSED)
    stored = dict(params)
    user = who.name[:128]
    stored["userName"] = user
    if not who.is_production:
        stored["taskType"] = "anal"
        stored["taskPriority"] = 1000
    if ordinary_caller(rt, who):
        # The owner is the caller (above) and the priority the server's, whatever was sent.
        stored.pop("currentPriority", None)
        plan.priority = USER_JOB_PRIORITY
    now = utcnow()
    with write_tx(rt.engine) as conn:
        try:
            _check_cache_files(conn, plan, rt)
        except BadTaskParameter as exc:
            return Reply(False, exc.message, REFUSED)
        active = conn.execute(
            select(tasks.c.jediTaskID, tasks.c.status).where(
                tasks.c.userName == user,
                tasks.c.taskName == plan.name,
                tasks.c.vo == plan.vo,
                tasks.c.status.notin_([s.value for s in FINAL]),
            )
        ).first()
        if active is not None:
            return Reply(
                False,
                f"jediTaskID={active[0]} is in the {active[1]} state for outDS={plan.name}. "
                "You cannot submit duplicated tasks; retry it, or use another outDS",
                DUPLICATE,
            )
        result = conn.execute(
            tasks.insert().values(
                taskName=plan.name,
                status=T.REGISTERED.value,
                superStatus=super_status(T.REGISTERED),
                userName=user,
                dn=who.dn[:250] or None,
                prodRole=1 if who.is_production else 0,
                vo=plan.vo,
                prodSourceLabel=plan.label,
                taskType=stored["taskType"] if "taskType" in stored else "anal",
                processingType=plan.processing_type,
                workingGroup=plan.working_group,
                site=plan.site,
                parent_tid=parent_tid,
                taskPriority=plan.priority,
                currentPriority=plan.priority,
                coreCount=plan.core_count,
                ramCount=plan.ram_count,
                walltime=plan.walltime,
                maxAttempt=plan.max_attempt,
                maxFailure=plan.max_attempt,
                attemptNr=0,
                transPath=plan.trans_path[:250],
                transUses=plan.trans_uses,
                transHome=plan.trans_home,
                architecture=plan.architecture,
                container_name=plan.container_name,
                jobCloning=_cloning_setting(stored),
                nextSerialNr=1,
                creationDate=now,
                modificationTime=now,
                stateChangeTime=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        task_id = int(key[0])
        conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(reqID=task_id))
        conn.execute(task_params.insert().values(jediTaskID=task_id, taskParams=json.dumps(stored)))
        log_task_status(conn, task_id, T.REGISTERED.value, None, now, f"submitted by {user}")

    try:
        advance_task(rt, task_id, contact_ddm=False)
    except Exception:  # noqa: BLE001 - the task is stored; the task manager retries the rest
        log.exception("task %s: first pass failed; the task manager will retry", task_id)
    return Reply(True, f"succeeded. new jediTaskID={task_id}", task_id)


def _load_for_command(conn: Connection, task_id: int, who: Identity, rt: Runtime) -> dict[str, Any] | Reply:
    task = lock_task(conn, task_id)
    if task is None:
        return Reply(False, f"jediTaskID={task_id} not found", NOT_FOUND)
    if not may_act(who, task, rt.settings.auth_mode == "open"):
        return Reply(False, "not the task owner or no production role", NOT_OWNER)
    return task


def _refused(task: Mapping[str, Any], command: str) -> Reply:
    return Reply(
        False,
        f"command={command} cannot be executed for jediTaskID={task['jediTaskID']} in {task['status']} status",
        BAD_STATUS,
    )


def _active_job_ids(rt: Runtime, task_id: int) -> list[int]:
    with write_tx(rt.engine) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                select(jobs.c.PandaID).where(
                    jobs.c.jediTaskID == task_id,
                    jobs.c.jobStatus.notin_(("finished", "failed", "cancelled", "closed")),
                )
            )
        ]


def kill_task_jobs(rt: Runtime, task_id: int, who: Identity) -> int:
    """Kill every unfinished job of a task (after it is aborting or finishing); how many."""
    ids = _active_job_ids(rt, task_id)
    if not ids:
        return 0
    return sum(kill_jobs(rt, ids, who, KILL_BY_TASK))


def _registered(command: str, task_id: int) -> str:
    return f"command={command} is registered for jediTaskID={task_id}"


def _command_move(
    rt: Runtime,
    task_id: int,
    who: Identity,
    command: str,
    target: Callable[[Connection, Mapping[str, Any]], TaskStatus | None],
    reason: str,
    changes: Mapping[str, Any] | None = None,
) -> Reply:
    """The shape every task command shares: load the task for ``who`` (owner or production, under
    lock), ask ``target`` where the command takes it from its status (None: the command does not
    apply there), and move it, all in one transaction. The reply says the command is registered."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load_for_command(conn, task_id, who, rt)
        if isinstance(task, Reply):
            return task
        to = target(conn, task)
        if to is None:
            return _refused(task, command)
        move_task(conn, task, to.value, now, dict(changes or {}), reason=reason)
    return Reply(True, _registered(command, task_id), OK)


def kill_task(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Abort a task: no new jobs, its jobs killed, aborted once they all ended."""

    def target(conn: Connection, task: Mapping[str, Any]) -> TaskStatus | None:
        status = TaskStatus(task["status"])
        return None if status in FINAL or status == T.ABORTING else T.ABORTING

    reply = _command_move(rt, task_id, who, "kill", target, f"killed by {who.name}")
    if reply.success:
        kill_task_jobs(rt, task_id, who)
    return reply


def finish_task(rt: Runtime, task_id: int, who: Identity, soft: bool) -> Reply:
    """Finish a task: no new jobs; running jobs are killed unless ``soft``, which lets them end."""

    def target(conn: Connection, task: Mapping[str, Any]) -> TaskStatus | None:
        status = TaskStatus(task["status"])
        return None if status in FINAL or status in (T.FINISHING, T.ABORTING) else T.FINISHING

    how = "soft " if soft else ""
    reply = _command_move(rt, task_id, who, "finish", target, f"{how}finish by {who.name}")
    if reply.success and not soft:
        kill_task_jobs(rt, task_id, who)
    return reply


def pause_task(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Stop making jobs for a task (its running jobs go on)."""

    def target(conn: Connection, task: Mapping[str, Any]) -> TaskStatus | None:
        return T.PAUSED if T.PAUSED in _allowed(task["status"]) else None

    return _command_move(rt, task_id, who, "pause", target, f"paused by {who.name}")


def _allowed(status: str) -> frozenset[TaskStatus]:
    return ALLOWED_MOVES.get(TaskStatus(status), frozenset())


def _running_files(conn: Connection, task_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).where(task_files.c.jediTaskID == task_id, task_files.c.status == "running")
        ).scalar_one()
    )


def resume_task(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Take a paused (or exhausted) task back to work."""

    def target(conn: Connection, task: Mapping[str, Any]) -> TaskStatus | None:
        if task["status"] not in (T.PAUSED, T.EXHAUSTED):
            return None
        # An exhausted task may only go back to ready (the state table): the task manager takes
        # it on from there, to running as soon as its jobs are.
        if task["status"] == T.PAUSED and task["oldStatus"] in (T.REGISTERED, T.DEFINED, T.STAGING):
            return TaskStatus(task["oldStatus"])
        return T.RUNNING if task["status"] == T.PAUSED and _running_files(conn, task_id) else T.READY

    return _command_move(rt, task_id, who, "resume", target, f"resumed by {who.name}", {"frozenTime": None})


def _reset_failed_files(
    conn: Connection,
    task: Mapping[str, Any],
    extra_attempts: int,
    now: Any,
    statuses: tuple[str, ...] = ("failed",),
) -> int:
    """Input files in ``statuses`` get ``extra_attempts`` more tries and become ready; how many.

    A killed task's unprocessed files are ``cancelled``: its retry brings those back too.
    """
    rows = conn.execute(
        select(task_files.c.fileID, task_files.c.attemptNr).where(
            task_files.c.jediTaskID == task["jediTaskID"],
            task_files.c.type.in_(("pseudo_input", "input", "lib")),
            task_files.c.status.in_(statuses),
        )
    ).all()
    for file_id, attempt in rows:
        conn.execute(
            task_files.update()
            .where(task_files.c.fileID == file_id)
            .values(
                status="ready", maxAttempt=int(attempt) + extra_attempts, PandaID=None, modificationTime=now
            )
        )
    return len(rows)


def _apply_new_parameters(
    conn: Connection, rt: Runtime, task_id: int, new: Any, who: Identity
) -> Reply | None:
    if isinstance(new, str):
        try:
            new = orjson.loads(new)
        except ValueError:
            return Reply(False, "new_parameters is not valid JSON", REFUSED)
    if not isinstance(new, dict):
        return Reply(False, "new_parameters must be an object", REFUSED)
    wrong = sorted(set(new) - RETRY_CHANGEABLE)
    if wrong:
        return Reply(
            False,
            f"task parameter {wrong[0]} cannot be changed by retry (only {', '.join(sorted(RETRY_CHANGEABLE))})",
            REFUSED,
        )
    text = conn.execute(
        select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
    ).scalar_one()
    if ordinary_caller(rt, who) and "currentPriority" in new:
        return Reply(
            False, "task parameter currentPriority can only be changed with the production role", REFUSED
        )
    merged = {**json.loads(text), **new}
    try:
        plan = plan_task(merged, _base_url(rt))
        _check_sites(rt, plan)
        _check_ddm(rt, plan)
    except BadTaskParameter as exc:
        return Reply(False, exc.message, REFUSED)
    conn.execute(
        task_params.update().where(task_params.c.jediTaskID == task_id).values(taskParams=json.dumps(merged))
    )
    conn.execute(
        tasks.update()
        .where(tasks.c.jediTaskID == task_id)
        .values(
            site=plan.site,
            maxAttempt=plan.max_attempt,
            ramCount=plan.ram_count,
            walltime=plan.walltime,
            coreCount=plan.core_count,
            currentPriority=plan.priority,
        )
    )
    return None


def retry_task(rt: Runtime, task_id: int, who: Identity, new_parameters: Any = None) -> Reply:
    """Run the failed part of a task again: failed input files become ready with fresh attempts.

    A final task (``finished``, ``failed``, or ``aborted`` after a kill, as JEDI allows) goes
    back to ``ready``; a task still at work keeps its status and only its failed files come
    back. With ``new_parameters`` (pbook retry newOpts) the allowed ones
    replace the stored ones first and the answer code is 3, as JEDI's is.
    """
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load_for_command(conn, task_id, who, rt)
        if isinstance(task, Reply):
            return task
        status = TaskStatus(task["status"])
        if status in (T.BROKEN, T.ABORTING, T.FINISHING, T.DONE):
            return _refused(task, "retry")
        if new_parameters:
            refused = _apply_new_parameters(conn, rt, task_id, new_parameters, who)
            if refused is not None:
                return refused
            task = lock_task(conn, task_id) or task
        statuses = ("failed", "cancelled") if status == T.ABORTED else ("failed",)
        reset = _reset_failed_files(conn, task, int(task["maxAttempt"]), now, statuses)
        code = 3 if new_parameters else OK
        if status in FINAL or status == T.EXHAUSTED:
            move_task(
                conn,
                task,
                T.READY.value,
                now,
                {"attemptNr": int(task["attemptNr"]) + 1, "errorDialog": None, "frozenTime": None},
                reason=f"retried by {who.name} ({reset} files)",
            )
            if rt.settings.ddm_rucio_host:
                enqueue_reopen(conn, task_id, now)
            return Reply(True, _registered("retry", task_id), code)
        conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(modificationTime=now))
    return Reply(
        True,
        f"retry has been triggered for {reset} failed files while the task is still {status.value}",
        code,
    )


def reactivate_task(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Bring a finished, failed or done task back to ``ready`` (failed files retried)."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load_for_command(conn, task_id, who, rt)
        if isinstance(task, Reply):
            return task
        if task["status"] not in (T.DONE, T.FINISHED, T.FAILED):
            return _refused(task, "reactivate")
        reset = _reset_failed_files(conn, task, int(task["maxAttempt"]), now)
        move_task(
            conn,
            task,
            T.READY.value,
            now,
            {"attemptNr": int(task["attemptNr"]) + 1, "errorDialog": None},
            reason=f"reactivated by {who.name} ({reset} files)",
        )
        if rt.settings.ddm_rucio_host:
            enqueue_reopen(conn, task_id, now)
    return Reply(True, _registered("reactivate", task_id), OK)


def increase_attempts(rt: Runtime, task_id: int, who: Identity, increase: int) -> Reply:
    """Give every unfinished input file ``increase`` more attempts."""
    if increase < 0:
        return Reply(False, f"increase must be a positive integer, got {increase}", BAD_STATUS)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load_for_command(conn, task_id, who, rt)
        if isinstance(task, Reply):
            return task
        if task["status"] in (T.BROKEN, T.ABORTED, T.ABORTING, T.DONE):
            return _refused(task, "increase_attempts")
        count = conn.execute(
            task_files.update()
            .where(
                task_files.c.jediTaskID == task_id,
                task_files.c.type.in_(("pseudo_input", "input", "lib")),
                task_files.c.status.in_(("ready", "running", "failed")),
            )
            .values(maxAttempt=task_files.c.maxAttempt + increase, modificationTime=now)
        ).rowcount
        conn.execute(
            tasks.update()
            .where(tasks.c.jediTaskID == task_id)
            .values(maxAttempt=tasks.c.maxAttempt + increase, modificationTime=now)
        )
    return Reply(True, f"increased attemptNr of {count} files for jediTaskID={task_id} by {increase}", OK)


def reload_input(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Accepted for active tasks; inputs here are fixed at submission, so nothing new appears."""
    with write_tx(rt.engine) as conn:
        task = _load_for_command(conn, task_id, who, rt)
        if isinstance(task, Reply):
            return task
        if TaskStatus(task["status"]) not in ACTIVE:
            return _refused(task, "reload_input")
    return Reply(
        True,
        _registered("reload_input", task_id) + " (inputs are fixed at submission: pfnList or noInput)",
        OK,
    )
