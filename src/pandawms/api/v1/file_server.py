"""``/api/v1/file_server/*``: the sandbox cache, Harvester's worker logs and checkpoints, and the
requests users leave for services.

prun and pathena upload their sandboxes (and ask whether one is already there), cache servers
register theirs, Harvester appends worker logs and keeps HPO checkpoints, and users leave
lost-file recovery, workflow and event-picking requests for the services that act on them.
"""

from __future__ import annotations

from typing import Any

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


@methods.post("upload_cache_file", file=Param("file"))
def upload_cache_file(ctx: RequestContext, file: UploadedFile) -> Result:
    """Store a sandbox in the cache (multipart field ``file``)."""
    stored = cache_files.store(ctx.rt, ctx.who, file.filename, file.data)
    return ok({"name": stored.name, "size": stored.size, "checksum": stored.checksum}, "True")


@methods.post("validate_cache_file", file_size=Param("int"), checksum=Param("str"))
def validate_cache_file(ctx: RequestContext, file_size: int, checksum: str) -> Result:
    """``FOUND:<host>:<name>`` when the caller already uploaded this sandbox (size and CRC)."""
    found = cache_files.find_reusable(ctx.rt, ctx.who, file_size, checksum)
    if found is None:
        return False, "no matching file in the cache", None
    return True, found, None


@methods.post("touch_cache_file", file_name=Param("str"))
def touch_cache_file(ctx: RequestContext, file_name: str) -> Result:
    """Keep a cached file from expiring for another ``cache_lifetime``."""
    cache_files.touch_file(ctx.rt, file_name)
    return ok()


@methods.post("delete_cache_file", file_name=Param("str"))
def delete_cache_file(ctx: RequestContext, file_name: str) -> Result:
    """Give up a cached file: the cleaner takes it unless an active task refers to it.

    Success whether or not the cache knew the file, as the real server answers.
    """
    open_mode = ctx.rt.settings.auth_mode == "open"
    cache_files.release_file(ctx.rt, ctx.who, file_name, open_mode)
    return ok()


@methods.post(
    "register_cache_file",
    user_name=Param("str"),
    file_name=Param("str"),
    file_size=Param("int"),
    checksum=Param("str"),
)
def register_cache_file(
    ctx: RequestContext, user_name: str, file_name: str, file_size: int, checksum: str
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


@methods.post("upload_hpo_checkpoint", file=Param("file"))
def upload_hpo_checkpoint(ctx: RequestContext, file: UploadedFile) -> Result:
    """Store an HPO checkpoint (multipart ``file`` named ``<jediTaskID>_<subID>``); data is its path."""
    path = checkpoints.store(ctx.rt, ctx.who, file.filename, file.data)
    return ok(str(path), f"Successfully placed at {path}")


@methods.post("delete_hpo_checkpoint", task_id=Param("str"), sub_id=Param("str"))
def delete_hpo_checkpoint(ctx: RequestContext, task_id: str, sub_id: str) -> Result:
    """Remove an HPO checkpoint."""
    checkpoints.delete(ctx.rt, ctx.who, task_id, sub_id)
    return ok()


@methods.post(
    "upload_workflow_request",
    data=Param("str"),
    dry_run=Param("bool", False),
    sync=Param("bool", False),
)
def upload_workflow_request(ctx: RequestContext, data: str, dry_run: bool, sync: bool) -> Result:
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


@methods.post(
    "upload_event_picking_request",
    run_event_list=Param("str", ""),
    data_type=Param("str", ""),
    stream_name=Param("str", ""),
    dataset_name=Param("str", ""),
    ami_tag=Param("str", ""),
    user_dataset_name=Param("str", ""),
    locked_by=Param("str", ""),
    parameters=Param("str", ""),
    input_file_list=Param("str", ""),
    n_sites=Param("str", ""),
    user_task_name=Param("str", ""),
    ei_api=Param("str", ""),
    include_guids=Param("bool", False),
)
def upload_event_picking_request(
    ctx: RequestContext, run_event_list: str, include_guids: bool, **fields: str
) -> Result:
    """Leave an event-picking request (runs and events to pick) for the event picker."""
    named = {
        "eventPickDataType": fields["data_type"],
        "eventPickStreamName": fields["stream_name"],
        "eventPickDS": fields["dataset_name"],
        "eventPickAmiTag": fields["ami_tag"],
        "eventPickNumSites": fields["n_sites"],
        "userTaskName": fields["user_task_name"],
        "userDatasetName": fields["user_dataset_name"],
        "lockedBy": fields["locked_by"],
        "params": fields["parameters"],
        "inputFileList": fields["input_file_list"],
        "ei_api": fields["ei_api"],
    }
    user_requests.store_event_picking(ctx.rt, ctx.who, named, run_event_list, include_guids)
    return ok()


def _url(ctx: RequestContext, name: str) -> str:
    settings = ctx.rt.settings
    host = public_host(settings, ctx.rt.node)
    if settings.tls_cert:
        return f"https://{host}:{settings.https_port}/cache/{jedi_logs.SUBDIR}/{name}"
    return f"http://{host}:{settings.port}/cache/{jedi_logs.SUBDIR}/{name}"


@methods.post("upload_jedi_log", file=Param("file"))
def upload_jedi_log(ctx: RequestContext, file: UploadedFile) -> Result:
    """Append a piece of a worker log (zlib-compressed, as Harvester sends it); ``data`` is its URL."""
    name, _ = jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok(_url(ctx, name))


@methods.post("update_jedi_log", file=Param("file"))
def update_jedi_log(ctx: RequestContext, file: UploadedFile) -> Result:
    """Append more of a log (the real server's name for the same append)."""
    jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok()


@methods.get("download_jedi_log", log_name=Param("str"), offset=Param("int", 0))
def download_jedi_log(ctx: RequestContext, log_name: str, offset: int) -> Result:
    """A log's text from ``offset`` on."""
    return ok(jedi_logs.read(ctx.rt, log_name, offset))


@methods.post(
    "upload_file_recovery_request",
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
