"""``/api/v1/file_server/*``: the sandbox cache, Harvester's worker logs and lost-file recovery.

prun and pathena upload their sandboxes (and ask whether one is already there), Harvester
appends worker logs and reads them back, and pbook asks for a task's lost files to be recovered.
"""

from __future__ import annotations

from typing import Annotated

from pandawms.api.authz import PRODUCTION_WRITE, USER, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.harvester import logs as jedi_logs
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
