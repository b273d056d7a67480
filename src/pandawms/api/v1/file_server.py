"""``/api/v1/file_server/*``: the sandbox cache, Harvester's worker logs and checkpoints, and the
requests users leave for services.

prun and pathena upload their sandboxes (and ask whether one is already there), cache servers
register theirs, Harvester appends worker logs and keeps HPO checkpoints, and users leave
lost-file recovery, workflow and event-picking requests for the services that act on them.
"""

from __future__ import annotations

from typing import Annotated

from pandawms.api.authz import PRODUCTION_WRITE, USER, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import Param
from pandawms.api.v1.common import no_idds_message
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.harvester import logs as jedi_logs
from pandawms.core.tasks import checkpoints, user_requests
from pandawms.core.tasks import requests as task_requests
from pandawms.core.tasks import sandbox as cache_files
from pandawms.core.tasks.sandbox import public_host

methods = V1Module("file_server")


@methods.post("upload_cache_file", USER_WRITE)
def upload_cache_file(ctx: RequestContext, *, file: Annotated[UploadedFile, Param("file")]) -> Result:
    """Store a sandbox in the cache (multipart field ``file``)."""
    stored = cache_files.store(ctx.rt, ctx.who, file.filename, file.data)
    return ok({"name": stored.name, "size": stored.size, "checksum": stored.checksum}, "True")


@methods.post("validate_cache_file", USER)
def validate_cache_file(ctx: RequestContext, *, file_size: int, checksum: str) -> Result:
    """``FOUND:<host>:<name>`` when the caller already uploaded this sandbox (size and CRC)."""
    found = cache_files.find_reusable(ctx.rt, ctx.who, file_size, checksum)
    if found is None:
        return False, "no matching file in the cache", None
    return True, found, None


@methods.post("touch_cache_file", USER_WRITE)
def touch_cache_file(ctx: RequestContext, *, file_name: str) -> Result:
    """Keep a cached file from expiring for another ``cache_lifetime``."""
    cache_files.touch_file(ctx.rt, file_name)
    return ok()


@methods.post("delete_cache_file", USER_WRITE)
def delete_cache_file(ctx: RequestContext, *, file_name: str) -> Result:
    """Give up a cached file: the cleaner takes it unless an active task refers to it.

    Only its owner (or production) may (checked in core/tasks/sandbox.py).

    Success whether or not the cache knew the file, as the real server answers.
    """
    open_mode = ctx.rt.settings.auth_mode == "open"
    cache_files.release_file(ctx.rt, ctx.who, file_name, open_mode)
    return ok()


@methods.post("register_cache_file", PRODUCTION_WRITE)
def register_cache_file(
    ctx: RequestContext, *, user_name: str, file_name: str, file_size: int, checksum: str
) -> Result:
    """Record a sandbox another cache server holds (production), so reuse checks find it.

    The file lives on the calling server, so its host is the caller's address (clients fetch it
    there), as on the real server without a fixed ``sandboxHostname``.
    """
    host = ctx.who.remote_host or "unknown"
    message = cache_files.register_file(ctx.rt, user_name, host, file_name, file_size, checksum)
    if message != "OK":
        return False, message, None
    return ok()


@methods.post("upload_hpo_checkpoint", USER_WRITE)
def upload_hpo_checkpoint(ctx: RequestContext, *, file: Annotated[UploadedFile, Param("file")]) -> Result:
    """Store an HPO checkpoint (multipart ``file`` named ``<jediTaskID>_<subID>``); data is its path.

    Harvester (production) or the task's owner (checked in core/tasks/checkpoints.py).
    """
    path = checkpoints.store(ctx.rt, ctx.who, file.filename, file.data)
    return ok(str(path), f"Successfully placed at {path}")


@methods.post("delete_hpo_checkpoint", USER_WRITE)
def delete_hpo_checkpoint(ctx: RequestContext, *, task_id: str, sub_id: str) -> Result:
    """Remove an HPO checkpoint."""
    checkpoints.delete(ctx.rt, ctx.who, task_id, sub_id)
    return ok()


@methods.post("upload_workflow_request", USER_WRITE)
def upload_workflow_request(
    ctx: RequestContext, *, data: str, dry_run: bool = False, sync: bool = False
) -> Result:
    """Leave a workflow description for the workflow processor.

    A synchronous or dry-run request asks the server to process the workflow now; pandawms has no
    workflow processor (it needs iDDS), so those are refused with the setting that is missing,
    and nothing is stored.
    """
    if sync or dry_run:
        from_idds = no_idds_message(ctx)
        return False, f"Cannot process the workflow request synchronously: {from_idds}", None
    user_requests.store_workflow(ctx.rt, ctx.who, data)
    return ok(None, "The request was accepted and will be processed in a few minutes")


@methods.post("upload_event_picking_request", USER_WRITE)
def upload_event_picking_request(
    ctx: RequestContext,
    *,
    run_event_list: str = "",
    data_type: str = "",
    stream_name: str = "",
    dataset_name: str = "",
    ami_tag: str = "",
    user_dataset_name: str = "",
    locked_by: str = "",
    parameters: str = "",
    input_file_list: str = "",
    n_sites: str = "",
    user_task_name: str = "",
    ei_api: str = "",
    include_guids: bool = False,
) -> Result:
    """Leave an event-picking request (runs and events to pick) for the event picker."""
    named = {
        "eventPickDataType": data_type,
        "eventPickStreamName": stream_name,
        "eventPickDS": dataset_name,
        "eventPickAmiTag": ami_tag,
        "eventPickNumSites": n_sites,
        "userTaskName": user_task_name,
        "userDatasetName": user_dataset_name,
        "lockedBy": locked_by,
        "params": parameters,
        "inputFileList": input_file_list,
        "ei_api": ei_api,
    }
    user_requests.store_event_picking(ctx.rt, ctx.who, named, run_event_list, include_guids)
    return ok()


def _url(ctx: RequestContext, name: str) -> str:
    settings = ctx.rt.settings
    host = public_host(settings, ctx.rt.node)
    if settings.tls_cert:
        return f"https://{host}:{settings.https_port}/cache/{jedi_logs.SUBDIR}/{name}"
    return f"http://{host}:{settings.port}/cache/{jedi_logs.SUBDIR}/{name}"


@methods.post("upload_jedi_log", PRODUCTION_WRITE)
def upload_jedi_log(ctx: RequestContext, *, file: Annotated[UploadedFile, Param("file")]) -> Result:
    """Append a piece of a worker log (zlib-compressed, as Harvester sends it); ``data`` is its URL."""
    name, _ = jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok(_url(ctx, name))


@methods.post("update_jedi_log", PRODUCTION_WRITE)
def update_jedi_log(ctx: RequestContext, *, file: Annotated[UploadedFile, Param("file")]) -> Result:
    """Append more of a log (the real server's name for the same append)."""
    jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok()


@methods.get("download_jedi_log", USER)
def download_jedi_log(ctx: RequestContext, *, log_name: str, offset: int = 0) -> Result:
    """A log's text from ``offset`` on."""
    return ok(jedi_logs.read(ctx.rt, log_name, offset))


@methods.post("upload_file_recovery_request", USER_WRITE)
def upload_file_recovery_request(
    ctx: RequestContext,
    *,
    task_id: int | None = None,
    dry_run: bool = False,
    dataset: str | None = None,
    files: Annotated[list[str] | None, Param("str_list", None, max_items=10000)],
    no_child_retry: bool = True,
    resurrect_datasets: bool = False,
    force: bool = False,
    reproduce_parent: bool = False,
    reproduce_upto_nth_gen: int = 0,
) -> Result:
    """Queue a request to recover a task's lost files (pbook recover_lost_files)."""
    if task_id is None:
        if dataset:
            return False, "recovery by dataset needs a data management system; give task_id", None
        return False, "Either task_id or dataset must be provided", None
    return task_requests.request_file_recovery(ctx.rt, task_id, dry_run, ctx.who)
