"""The rest of what pbook calls on the v1 API: debug mode, job metadata, lost-file recovery,
a task's parent, and the iDDS and native workflow methods.

pandawms has no iDDS and no native workflows: those methods answer in the envelope with the
reason (``success: false``), never a 404, so pbook prints it instead of a connection error.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1 import Result, v1
from pandawms.core.jobs import debug_mode
from pandawms.core.tasks import requests as task_requests


@v1("job", "set_debug_mode", "POST", job_id=Param("int"), mode=Param("bool"))
def job_set_debug_mode(ctx: RequestContext, job_id: int, mode: bool) -> Result:
    """Turn the debug mode of a job on or off (pbook debug): its pilot then streams stdout.

    ``data`` repeats the message: panda-client shows ``data`` of a successful call.
    """
    privileged = ctx.rt.settings.auth_mode == "open" or ctx.who.is_production or "manager" in ctx.who.roles
    success, message = debug_mode.set_debug_mode(ctx.rt, job_id, mode, ctx.who, privileged)
    return success, message, message


@v1("job", "get_metadata_for_analysis_jobs", "GET", task_id=Param("int"))
def job_get_metadata_for_analysis_jobs(ctx: RequestContext, task_id: int) -> Result:
    """Job reports of the task's finished user jobs, by PandaID (pbook get_user_job_metadata)."""
    return task_requests.user_job_metadata(ctx.rt, task_id, ctx.who)


@v1(
    "file_server",
    "upload_file_recovery_request",
    "POST",
    task_id=Param("int", None),
    dry_run=Param("bool", False),
    dataset=Param("str", None),
    files=Param("str_list", None, max_items=10000),
    no_child_retry=Param("bool", True),
    resurrect_datasets=Param("bool", False),
    force=Param("bool", False),
    reproduce_parent=Param("bool", False),
    reproduce_upto_nth_gen=Param("int", 0),
)
def upload_file_recovery_request(
    ctx: RequestContext, task_id: int | None, dry_run: bool, dataset: str | None, **_options: Any
) -> Result:
    """Queue a request to recover a task's lost files (pbook recover_lost_files)."""
    if task_id is None:
        if dataset:
            return False, "recovery by dataset needs a data management system; give task_id", None
        return False, "Either task_id or dataset must be provided", None
    return task_requests.request_file_recovery(ctx.rt, task_id, dry_run, ctx.who)


@v1("task", "get_parent_detailed_info", "GET", task_id=Param("int"))
def task_get_parent_detailed_info(ctx: RequestContext, task_id: int) -> Result:
    """The parent of a task, with every attribute as task/get_detailed_info gives them."""
    return task_requests.parent_detailed_info(ctx.rt, task_id)


def no_idds_message(ctx: RequestContext) -> str:
    """Why a workflow call cannot be served here."""
    if not ctx.rt.settings.idds_url:
        return "no iDDS configured: set PANDA_IDDS_URL"
    return f"pandawms does not relay workflow commands to iDDS ({ctx.rt.settings.idds_url[:200]})"


@v1(
    "idds",
    "relay_idds_command",
    "POST",
    command_name=Param("str"),
    args=Param("any", None),
    kwargs=Param("any", None),
    manager=Param("bool", False),
    json_outputs=Param("bool", False),
)
def relay_idds_command(ctx: RequestContext, **_args: Any) -> Result:
    """Refused: there is no iDDS behind this server."""
    return False, no_idds_message(ctx), None


@v1(
    "idds",
    "execute_idds_workflow_command",
    "POST",
    command_name=Param("str"),
    kwargs=Param("any", None),
    json_outputs=Param("bool", False),
)
def execute_idds_workflow_command(ctx: RequestContext, **_args: Any) -> Result:
    """Refused: there is no iDDS behind this server (pbook *_workflow)."""
    return False, no_idds_message(ctx), None


@v1("workflow", "submit_workflow_raw_request", "POST", params=Param("any"))
def submit_workflow_raw_request(ctx: RequestContext, params: Any) -> Result:
    """Refused: workflows (pchain) need iDDS or native workflows, which pandawms lacks."""
    return False, no_idds_message(ctx), None


@v1("workflow", "submit_workflow", "POST", workflow_definition=Param("any"))
def submit_workflow(ctx: RequestContext, workflow_definition: Any) -> Result:
    """Refused: workflows are not run by pandawms."""
    return False, no_idds_message(ctx), None


@v1("workflow", "get_workflow_details", "GET", workflow_id=Param("int"))
def get_workflow_details(ctx: RequestContext, workflow_id: int) -> Result:
    """Refused: pandawms keeps no native workflows (pbook show_native_workflow)."""
    return False, f"workflow_id={workflow_id} not found: pandawms runs no native workflows", None
