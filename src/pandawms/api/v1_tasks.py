"""v1 methods of the task layer and the sandbox cache, as panda-client 2.2.0 calls them.

``task/*`` (prun, pathena, pbook) and ``file_server/*`` (sandbox upload and reuse). Refusals of
a task call (bad task parameters, unknown task, not the owner, wrong task status) are answered
like the real server's: HTTP 200 with ``success: false``, the reason in ``message`` and JEDI's
code in ``data``. panda-client throws away the body of any other HTTP status, so this is the
only way prun and pbook can show the user why. A missing or mistyped argument is refused before
the handler, in the same envelope, as for every v1 method.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.context import RequestContext
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import Param
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.jobs import kill
from pandawms.core.jobs.read import MAX_IDS_PER_READ, get_descriptions
from pandawms.core.tasks import changes as task_changes
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks import read as tasks_read
from pandawms.core.tasks import sandbox as cache_files
from pandawms.core.tasks.commands import Reply

TASK_ID = Param("int")


def _reply(reply: Reply) -> Result:
    return reply.success, reply.message, reply.data


def _no_task(task_id: int) -> Result:
    return False, f"jediTaskID={task_id} not found", None


# --- file_server ------------------------------------------------------------------------------


@v1("file_server", "upload_cache_file", "POST", file=Param("file"))
def upload_cache_file(ctx: RequestContext, file: UploadedFile) -> Result:
    """Store a sandbox in the cache (multipart field ``file``)."""
    stored = cache_files.store(ctx.rt, ctx.who, file.filename, file.data)
    return ok({"name": stored.name, "size": stored.size, "checksum": stored.checksum}, "True")


@v1("file_server", "validate_cache_file", "POST", file_size=Param("int"), checksum=Param("str"))
def validate_cache_file(ctx: RequestContext, file_size: int, checksum: str) -> Result:
    """``FOUND:<host>:<name>`` when the caller already uploaded this sandbox (size and CRC)."""
    found = cache_files.find_reusable(ctx.rt, ctx.who, file_size, checksum)
    if found is None:
        return False, "no matching file in the cache", None
    return True, found, None


# --- task: submission and commands ------------------------------------------------------------


@v1("task", "submit", "POST", task_parameters=Param("dict"), parent_tid=Param("int", None))
def task_submit(ctx: RequestContext, task_parameters: dict[str, Any], parent_tid: int | None) -> Result:
    """Register a task from prun/pathena's parameter dict; ``data`` is the jediTaskID."""
    return _reply(tasks.submit_task(ctx.rt, task_parameters, ctx.who, parent_tid))


@v1("task", "kill", "POST", task_id=TASK_ID, broadcast=Param("bool", False))
def task_kill(ctx: RequestContext, task_id: int, broadcast: bool) -> Result:
    """Abort a task and kill its jobs."""
    return _reply(tasks.kill_task(ctx.rt, task_id, ctx.who))


@v1("task", "finish", "POST", task_id=TASK_ID, soft=Param("bool", False), broadcast=Param("bool", False))
def task_finish(ctx: RequestContext, task_id: int, soft: bool, broadcast: bool) -> Result:
    """Stop a task making jobs; kill its running ones unless ``soft``."""
    return _reply(tasks.finish_task(ctx.rt, task_id, ctx.who, soft))


@v1("task", "pause", "POST", task_id=TASK_ID)
def task_pause(ctx: RequestContext, task_id: int) -> Result:
    """Stop job generation of a task."""
    return _reply(tasks.pause_task(ctx.rt, task_id, ctx.who))


@v1("task", "resume", "POST", task_id=TASK_ID)
def task_resume(ctx: RequestContext, task_id: int) -> Result:
    """Resume a paused or exhausted task."""
    return _reply(tasks.resume_task(ctx.rt, task_id, ctx.who))


@v1(
    "task",
    "retry",
    "POST",
    task_id=TASK_ID,
    new_parameters=Param("any", None),
    no_child_retry=Param("bool", False),
    discard_events=Param("bool", False),
    disable_staging_mode=Param("bool", False),
    keep_gshare_priority=Param("bool", False),
    ignore_hard_exhausted=Param("bool", False),
)
def task_retry(ctx: RequestContext, task_id: int, new_parameters: Any, **_flags: bool) -> Result:
    """Retry the failed work of a task (optionally with some parameters changed)."""
    # Code 3 in data is both "retried with new parameters" and "not the owner" (JEDI's numbers):
    # success tells them apart, so a refusal is never reported (or audited) as done.
    return _reply(tasks.retry_task(ctx.rt, task_id, ctx.who, new_parameters or None))


@v1(
    "task",
    "reactivate",
    "POST",
    task_id=TASK_ID,
    keep_attempt_nr=Param("bool", False),
    trigger_job_generation=Param("bool", False),
)
def task_reactivate(ctx: RequestContext, task_id: int, **_flags: bool) -> Result:
    """Bring a final task back to work."""
    return _reply(tasks.reactivate_task(ctx.rt, task_id, ctx.who))


@v1("task", "increase_attempts", "POST", task_id=TASK_ID, increase=Param("int"))
def task_increase_attempts(ctx: RequestContext, task_id: int, increase: int) -> Result:
    """More attempts for the unfinished files of a task."""
    return _reply(tasks.increase_attempts(ctx.rt, task_id, ctx.who, increase))


@v1("task", "reload_input", "POST", task_id=TASK_ID, ignore_hard_exhausted=Param("bool", False))
def task_reload_input(ctx: RequestContext, task_id: int, ignore_hard_exhausted: bool) -> Result:
    """Re-read a task's input (fixed at submission here, so nothing changes)."""
    return _reply(tasks.reload_input(ctx.rt, task_id, ctx.who))


# --- task: reading ----------------------------------------------------------------------------


@v1("task", "get_status", "GET", task_id=TASK_ID)
def task_get_status(ctx: RequestContext, task_id: int) -> Result:
    """The task's status string."""
    status = tasks_read.get_status(ctx.rt, task_id)
    return ok(status) if status is not None else (False, "Task not found", None)


@v1("task", "get_task_parameters", "GET", task_id=TASK_ID)
def task_get_task_parameters(ctx: RequestContext, task_id: int) -> Result:
    """The parameters the task was submitted with."""
    params = tasks_read.get_parameters(ctx.rt, task_id)
    return ok(params) if params is not None else (False, "Task not found", None)


@v1("task", "get_job_ids", "GET", task_id=TASK_ID)
def task_get_job_ids(ctx: RequestContext, task_id: int) -> Result:
    """PandaIDs of the task's jobs, in any status."""
    return ok(tasks_read.get_job_ids(ctx.rt, task_id))


@v1(
    "task",
    "get_details",
    "GET",
    task_id=TASK_ID,
    include_parameters=Param("bool", False),
    include_status=Param("bool", False),
)
def task_get_details(
    ctx: RequestContext, task_id: int, include_parameters: bool, include_status: bool
) -> Result:
    """inDS, outDS, job statistics and PandaIDs of a task."""
    found = tasks_read.details(ctx.rt, task_id, include_parameters, include_status)
    return ok(found) if found is not None else (False, "Task not found or error retrieving the details", None)


@v1("task", "get_detailed_info", "GET", task_id=TASK_ID)
def task_get_detailed_info(ctx: RequestContext, task_id: int) -> Result:
    """Every attribute of one task with its progress and parameters."""
    found = tasks_read.detailed_info(ctx.rt, task_id)
    return ok(found) if found is not None else (False, "Task not found or error retrieving task info", None)


@v1(
    "task",
    "get_tasks_modified_since",
    "GET",
    since=Param("str"),
    dn=Param("str", None),
    full=Param("bool", False),
    min_task_id=Param("int", None),
    prod_source_label=Param("str", "user"),
)
def task_get_tasks_modified_since(
    ctx: RequestContext,
    since: str,
    dn: str | None,
    full: bool,
    min_task_id: int | None,
    prod_source_label: str,
) -> Result:
    """The caller's tasks changed since a time, keyed by reqID."""
    return ok(tasks_read.modified_since(ctx.rt, ctx.who, since, dn, full, min_task_id, prod_source_label))


@v1(
    "task",
    "get_tasks_detailed_info_since",
    "GET",
    since=Param("str", None),
    filters=Param("str", None),
    n_tasks=Param("int", 500),
)
def task_get_tasks_detailed_info_since(
    ctx: RequestContext, since: str | None, filters: str | None, n_tasks: int
) -> Result:
    """pbook show: the caller's tasks with progress."""
    return ok(tasks_read.detailed_since(ctx.rt, ctx.who, since, filters, n_tasks))


@v1("task", "get_job_descriptions", "GET", task_id=TASK_ID, unsuccessful_only=Param("bool", False))
def task_get_job_descriptions(ctx: RequestContext, task_id: int, unsuccessful_only: bool) -> Result:
    """Full descriptions of the task's jobs (only failed, cancelled and closed ones if asked)."""
    from pandawms.api.jobspec_codec import encode_job

    ids = tasks_read.get_job_ids(ctx.rt, task_id, unsuccessful_only)[:5500]
    found = get_descriptions(ctx.rt, ids, include_archive=True)
    return ok([encode_job(j) for j in found if j])


@v1(
    "task",
    "get_datasets_and_files",
    "GET",
    task_id=TASK_ID,
    dataset_types=Param("str_list", ["input", "pseudo_input"]),
    dataset_only=Param("bool", False),
)
def task_get_datasets_and_files(
    ctx: RequestContext, task_id: int, dataset_types: list[str], dataset_only: bool
) -> Result:
    """Datasets of the given types with their files and statuses."""
    data = tasks_read.datasets_and_files(ctx.rt, task_id, dataset_types, dataset_only)
    return ok(data) if data else (False, "No data found for the task", None)


# --- task: operator changes (core/tasks/changes.py) --------------------------------------------


@v1("task", "change_priority", "POST", task_id=TASK_ID, priority=Param("int"))
def task_change_priority(ctx: RequestContext, task_id: int, priority: int) -> Result:
    """New priority for a task and its jobs not yet started."""
    return _reply(task_changes.change_priority(ctx.rt, task_id, priority, ctx.who))


@v1("task", "change_attribute", "POST", task_id=TASK_ID, attribute_name=Param("str"), value=Param("int"))
def task_change_attribute(ctx: RequestContext, task_id: int, attribute_name: str, value: int) -> Result:
    """Set ramCount, wallTime, cpuTime or coreCount of a task."""
    return _reply(task_changes.change_attribute(ctx.rt, task_id, attribute_name, value, ctx.who))


@v1("task", "change_split_rule", "POST", task_id=TASK_ID, attribute_name=Param("str"), value=Param("str"))
def task_change_split_rule(ctx: RequestContext, task_id: int, attribute_name: str, value: str) -> Result:
    """Add or change one item of a task's split rule."""
    return _reply(task_changes.change_split_rule(ctx.rt, task_id, attribute_name, value, ctx.who))


@v1("task", "change_modification_time", "POST", task_id=TASK_ID, hour_offset=Param("int"))
def task_change_modification_time(ctx: RequestContext, task_id: int, hour_offset: int) -> Result:
    """Set a task's modificationTime to now plus ``hour_offset`` hours."""
    return _reply(task_changes.change_modification_time(ctx.rt, task_id, hour_offset, ctx.who))


@v1(
    "task",
    "reassign",
    "POST",
    task_id=TASK_ID,
    site=Param("str", None),
    cloud=Param("str", None),
    nucleus=Param("str", None),
    mode=Param("str", None),
)
def task_reassign(
    ctx: RequestContext,
    task_id: int,
    site: str | None,
    cloud: str | None,
    nucleus: str | None,
    mode: str | None,
) -> Result:
    """Send a task's work to a site, cloud or nucleus (mode kill, soft or nokill)."""
    return _reply(task_changes.reassign(ctx.rt, task_id, ctx.who, site, cloud, nucleus, mode))


@v1(
    "task",
    "reassign_global_share",
    "POST",
    task_id_list=Param("int_list", max_items=1000),
    share=Param("str"),
    reassign_running_jobs=Param("bool"),
)
def task_reassign_global_share(
    ctx: RequestContext, task_id_list: list[int], share: str, reassign_running_jobs: bool
) -> Result:
    """Move tasks (and their queued jobs, running ones if asked) to another global share."""
    return _reply(
        task_changes.reassign_global_share(ctx.rt, task_id_list, share, reassign_running_jobs, ctx.who)
    )


@v1("task", "release", "POST", task_id=TASK_ID)
def task_release(ctx: RequestContext, task_id: int) -> Result:
    """Release a task held for staging (nothing is staged here)."""
    return _reply(task_changes.release(ctx.rt, task_id, ctx.who))


@v1("task", "avalanche", "POST", task_id=TASK_ID)
def task_avalanche(ctx: RequestContext, task_id: int) -> Result:
    """End a task's scouting (there is none here)."""
    return _reply(task_changes.avalanche(ctx.rt, task_id, ctx.who))


@v1(
    "task",
    "kill_unfinished_jobs",
    "POST",
    task_id=TASK_ID,
    code=Param("int", None),
    use_email_as_id=Param("bool", False),
)
def task_kill_unfinished_jobs(
    ctx: RequestContext, task_id: int, code: int | None, use_email_as_id: bool
) -> Result:
    """Kill every unfinished job of a task; one boolean per such job, as job/kill answers."""
    ids = task_changes.unfinished_job_ids(ctx.rt, task_id, MAX_IDS_PER_READ)
    return ok(kill.kill_jobs(ctx.rt, ids, ctx.who, code))


@v1(
    "task",
    "enable_job_cloning",
    "POST",
    jedi_task_id=TASK_ID,
    mode=Param("str", None),
    multiplicity=Param("int", None),
    num_sites=Param("int", None),
)
def task_enable_job_cloning(
    ctx: RequestContext, jedi_task_id: int, mode: str | None, multiplicity: int | None, num_sites: int | None
) -> Result:
    """Enable job cloning for a task (mode runonce or storeonce)."""
    return _reply(
        task_changes.enable_job_cloning(ctx.rt, jedi_task_id, ctx.who, mode, multiplicity, num_sites)
    )


@v1("task", "disable_job_cloning", "POST", jedi_task_id=TASK_ID)
def task_disable_job_cloning(ctx: RequestContext, jedi_task_id: int) -> Result:
    """Disable job cloning for a task."""
    return _reply(task_changes.disable_job_cloning(ctx.rt, jedi_task_id, ctx.who))


@v1(
    "task",
    "enable_jumbo_jobs",
    "POST",
    task_id=TASK_ID,
    jumbo_jobs_total=Param("int"),
    jumbo_jobs_per_site=Param("int", None),
)
def task_enable_jumbo_jobs(
    ctx: RequestContext, task_id: int, jumbo_jobs_total: int, jumbo_jobs_per_site: int | None
) -> Result:
    """Store the jumbo-job setting of a task (no jumbo jobs are made: no event service here)."""
    return _reply(
        task_changes.enable_jumbo_jobs(ctx.rt, task_id, ctx.who, jumbo_jobs_total, jumbo_jobs_per_site)
    )


@v1("task", "get_jumbo_job_datasets", "GET", from_offset=Param("int"), to_offset=Param("int", 0))
def task_get_jumbo_job_datasets(ctx: RequestContext, from_offset: int, to_offset: int) -> Result:
    """Tasks with jumbo jobs enabled, modified between now-from_offset and now-to_offset days, to their input datasets."""
    if not 0 <= to_offset <= from_offset <= 3650:
        return False, "need 0 <= to_offset <= from_offset <= 3650 (days)", None
    return ok(task_changes.jumbo_job_datasets(ctx.rt, from_offset, to_offset))
