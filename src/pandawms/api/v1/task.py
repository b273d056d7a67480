"""``/api/v1/task/*``: the task layer as panda-client 2.2.0 (prun, pathena, pbook) and operators call it.

Refusals of a task call (bad task parameters, unknown task, not the owner, wrong task status)
are answered like the real server's: HTTP 200 with ``success: false``, the reason in ``message``
and JEDI's code in ``data``. panda-client throws away the body of any other HTTP status, so this
is the only way prun and pbook can show the user why. A missing or mistyped argument is refused
before the handler, in the same envelope, as for every v1 method.
"""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import PRODUCTION_WRITE, USER, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.jobspec_codec import encode_job
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.jobs import kill
from pandawms.core.jobs.read import MAX_IDS_PER_READ, get_descriptions
from pandawms.core.tasks import changes as task_changes
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks import read as tasks_read
from pandawms.core.tasks import requests as task_requests
from pandawms.core.tasks.commands import Reply

methods = V1Module("task")


def _submitted_task(kwargs: dict[str, Any], data: Any) -> dict[str, Any]:
    """A task submission's audit target: the jediTaskID it created."""
    return {"task_id": data}


TASK_ID = Param("int")


def _reply(reply: Reply) -> Result:
    return reply.success, reply.message, reply.data


# --- task: submission and commands ----------------------------------------------------------------


@methods.post("submit", USER_WRITE, submission=True, targets=_submitted_task)
def task_submit(
    ctx: RequestContext, *, task_parameters: dict[str, Any], parent_tid: int | None = None
) -> Result:
    """Register a task from prun/pathena's parameter dict; ``data`` is the jediTaskID."""
    return _reply(tasks.submit_task(ctx.rt, task_parameters, ctx.who, parent_tid))


@methods.post("kill", USER_WRITE)
def task_kill(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], broadcast: bool = False) -> Result:
    """Abort a task and kill its jobs."""
    return _reply(tasks.kill_task(ctx.rt, task_id, ctx.who))


@methods.post("finish", USER_WRITE)
def task_finish(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], soft: bool = False, broadcast: bool = False
) -> Result:
    """Stop a task making jobs; kill its running ones unless ``soft``."""
    return _reply(tasks.finish_task(ctx.rt, task_id, ctx.who, soft))


@methods.post("pause", USER_WRITE)
def task_pause(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """Stop job generation of a task."""
    return _reply(tasks.pause_task(ctx.rt, task_id, ctx.who))


@methods.post("resume", USER_WRITE)
def task_resume(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """Resume a paused or exhausted task."""
    return _reply(tasks.resume_task(ctx.rt, task_id, ctx.who))


@methods.post("retry", USER_WRITE)
def task_retry(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    new_parameters: Any = None,
    no_child_retry: bool = False,
    discard_events: bool = False,
    disable_staging_mode: bool = False,
    keep_gshare_priority: bool = False,
    ignore_hard_exhausted: bool = False,
) -> Result:
    """Retry the failed work of a task (optionally with some parameters changed).

    The flags are the real server's; they are accepted and have no effect here.
    """
    # Code 3 in data is both "retried with new parameters" and "not the owner" (JEDI's numbers):
    # success tells them apart, so a refusal is never reported (or audited) as done.
    return _reply(tasks.retry_task(ctx.rt, task_id, ctx.who, new_parameters or None))


@methods.post("reactivate", USER_WRITE)
def task_reactivate(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    keep_attempt_nr: bool = False,
    trigger_job_generation: bool = False,
) -> Result:
    """Bring a final task back to work (the flags are accepted and have no effect here)."""
    return _reply(tasks.reactivate_task(ctx.rt, task_id, ctx.who))


@methods.post("increase_attempts", USER_WRITE)
def task_increase_attempts(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], increase: int) -> Result:
    """More attempts for the unfinished files of a task."""
    return _reply(tasks.increase_attempts(ctx.rt, task_id, ctx.who, increase))


@methods.post("reload_input", USER_WRITE)
def task_reload_input(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], ignore_hard_exhausted: bool = False
) -> Result:
    """Re-read a task's input (fixed at submission here, so nothing changes)."""
    return _reply(tasks.reload_input(ctx.rt, task_id, ctx.who))


# --- task: reading --------------------------------------------------------------------------------


@methods.get("get_status", USER)
def task_get_status(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """The task's status string."""
    status = tasks_read.get_status(ctx.rt, task_id)
    return ok(status) if status is not None else (False, "Task not found", None)


@methods.get("get_task_parameters", USER)
def task_get_task_parameters(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """The parameters the task was submitted with."""
    params = tasks_read.get_parameters(ctx.rt, task_id)
    return ok(params) if params is not None else (False, "Task not found", None)


@methods.get("get_job_ids", USER)
def task_get_job_ids(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """PandaIDs of the task's jobs, in any status."""
    return ok(tasks_read.get_job_ids(ctx.rt, task_id))


@methods.get("get_details", USER)
def task_get_details(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    include_parameters: bool = False,
    include_status: bool = False,
) -> Result:
    """inDS, outDS, job statistics and PandaIDs of a task."""
    found = tasks_read.details(ctx.rt, task_id, include_parameters, include_status)
    return ok(found) if found is not None else (False, "Task not found or error retrieving the details", None)


@methods.get("get_detailed_info", USER)
def task_get_detailed_info(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """Every attribute of one task with its progress and parameters."""
    found = tasks_read.detailed_info(ctx.rt, task_id)
    return ok(found) if found is not None else (False, "Task not found or error retrieving task info", None)


@methods.get("get_parent_detailed_info", USER)
def task_get_parent_detailed_info(ctx: RequestContext, *, task_id: int) -> Result:
    """The parent of a task, with every attribute as task/get_detailed_info gives them."""
    return task_requests.parent_detailed_info(ctx.rt, task_id)


@methods.get("get_tasks_modified_since", USER)
def task_get_tasks_modified_since(
    ctx: RequestContext,
    *,
    since: str,
    dn: str | None = None,
    full: bool = False,
    min_task_id: int | None = None,
    prod_source_label: str = "user",
) -> Result:
    """The caller's tasks changed since a time, keyed by reqID."""
    return ok(tasks_read.modified_since(ctx.rt, ctx.who, since, dn, full, min_task_id, prod_source_label))


@methods.get("get_tasks_detailed_info_since", USER)
def task_get_tasks_detailed_info_since(
    ctx: RequestContext, *, since: str | None = None, filters: str | None = None, n_tasks: int = 500
) -> Result:
    """pbook show: the caller's tasks with progress."""
    return ok(tasks_read.detailed_since(ctx.rt, ctx.who, since, filters, n_tasks))


@methods.get("get_job_descriptions", USER)
def task_get_job_descriptions(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], unsuccessful_only: bool = False
) -> Result:
    """Full descriptions of the task's jobs (only failed, cancelled and closed ones if asked)."""

    ids = tasks_read.get_job_ids(ctx.rt, task_id, unsuccessful_only)[:5500]
    found = get_descriptions(ctx.rt, ids, include_archive=True)
    return ok([encode_job(j) for j in found if j])


@methods.get("get_datasets_and_files", USER)
def task_get_datasets_and_files(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    dataset_types: Annotated[list[str], Param("str_list", ["input", "pseudo_input"])],
    dataset_only: bool = False,
) -> Result:
    """Datasets of the given types with their files and statuses."""
    data = tasks_read.datasets_and_files(ctx.rt, task_id, dataset_types, dataset_only)
    return ok(data) if data else (False, "No data found for the task", None)


# --- task: operator changes (core/tasks/changes.py) -----------------------------------------------


@methods.post("change_priority", PRODUCTION_WRITE)
def task_change_priority(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], priority: int) -> Result:
    """New priority for a task and its jobs not yet started."""
    return _reply(task_changes.change_priority(ctx.rt, task_id, priority, ctx.who))


@methods.post("change_attribute", PRODUCTION_WRITE)
def task_change_attribute(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], attribute_name: str, value: int
) -> Result:
    """Set ramCount, wallTime, cpuTime or coreCount of a task."""
    return _reply(task_changes.change_attribute(ctx.rt, task_id, attribute_name, value, ctx.who))


@methods.post("change_split_rule", PRODUCTION_WRITE)
def task_change_split_rule(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], attribute_name: str, value: str
) -> Result:
    """Add or change one item of a task's split rule."""
    return _reply(task_changes.change_split_rule(ctx.rt, task_id, attribute_name, value, ctx.who))


@methods.post("change_modification_time", PRODUCTION_WRITE)
def task_change_modification_time(
    ctx: RequestContext, *, task_id: Annotated[int, TASK_ID], hour_offset: int
) -> Result:
    """Set a task's modificationTime to now plus ``hour_offset`` hours."""
    return _reply(task_changes.change_modification_time(ctx.rt, task_id, hour_offset, ctx.who))


@methods.post("reassign", USER_WRITE)
def task_reassign(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    site: str | None = None,
    cloud: str | None = None,
    nucleus: str | None = None,
    mode: str | None = None,
) -> Result:
    """Send a task's work to a site, cloud or nucleus (mode kill, soft or nokill)."""
    return _reply(task_changes.reassign(ctx.rt, task_id, ctx.who, site, cloud, nucleus, mode))


@methods.post("reassign_global_share", PRODUCTION_WRITE)
def task_reassign_global_share(
    ctx: RequestContext,
    *,
    task_id_list: Annotated[list[int], Param("int_list", max_items=1000)],
    share: str,
    reassign_running_jobs: bool,
) -> Result:
    """Move tasks (and their queued jobs, running ones if asked) to another global share."""
    return _reply(
        task_changes.reassign_global_share(ctx.rt, task_id_list, share, reassign_running_jobs, ctx.who)
    )


@methods.post("release", PRODUCTION_WRITE)
def task_release(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """Release a task held for staging (nothing is staged here)."""
    return _reply(task_changes.release(ctx.rt, task_id, ctx.who))


@methods.post("avalanche", PRODUCTION_WRITE)
def task_avalanche(ctx: RequestContext, *, task_id: Annotated[int, TASK_ID]) -> Result:
    """End a task's scouting (there is none here)."""
    return _reply(task_changes.avalanche(ctx.rt, task_id, ctx.who))


@methods.post("kill_unfinished_jobs", USER_WRITE)
def task_kill_unfinished_jobs(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    code: int | None = None,
    use_email_as_id: bool = False,
) -> Result:
    """Kill every unfinished job of a task; one boolean per such job, as job/kill answers."""
    ids = task_changes.unfinished_job_ids(ctx.rt, task_id, MAX_IDS_PER_READ)
    return ok(kill.kill_jobs(ctx.rt, ids, ctx.who, code))


@methods.post("enable_job_cloning", PRODUCTION_WRITE)
def task_enable_job_cloning(
    ctx: RequestContext,
    *,
    jedi_task_id: Annotated[int, TASK_ID],
    mode: str | None = None,
    multiplicity: int | None = None,
    num_sites: int | None = None,
) -> Result:
    """Enable job cloning for a task (mode runonce or storeonce)."""
    return _reply(
        task_changes.enable_job_cloning(ctx.rt, jedi_task_id, ctx.who, mode, multiplicity, num_sites)
    )


@methods.post("disable_job_cloning", PRODUCTION_WRITE)
def task_disable_job_cloning(ctx: RequestContext, *, jedi_task_id: Annotated[int, TASK_ID]) -> Result:
    """Disable job cloning for a task."""
    return _reply(task_changes.disable_job_cloning(ctx.rt, jedi_task_id, ctx.who))


@methods.post("enable_jumbo_jobs", PRODUCTION_WRITE)
def task_enable_jumbo_jobs(
    ctx: RequestContext,
    *,
    task_id: Annotated[int, TASK_ID],
    jumbo_jobs_total: int,
    jumbo_jobs_per_site: int | None = None,
) -> Result:
    """Turn jumbo jobs on (or off with total 0) for an event-service task (core/tasks/jumbo.py)."""
    return _reply(
        task_changes.enable_jumbo_jobs(ctx.rt, task_id, ctx.who, jumbo_jobs_total, jumbo_jobs_per_site)
    )


@methods.get("get_jumbo_job_datasets", USER)
def task_get_jumbo_job_datasets(ctx: RequestContext, *, from_offset: int, to_offset: int = 0) -> Result:
    """Tasks with jumbo jobs enabled, modified between now-from_offset and now-to_offset days, to their input datasets."""
    if not 0 <= to_offset <= from_offset <= 3650:
        return False, "need 0 <= to_offset <= from_offset <= 3650 (days)", None
    return ok(task_changes.jumbo_job_datasets(ctx.rt, from_offset, to_offset))
