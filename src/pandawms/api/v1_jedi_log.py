"""The v1 ``file_server/*_jedi_log`` methods: worker logs Harvester uploads, and reading them back."""

from __future__ import annotations

from pandawms.api.context import RequestContext
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import Param
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.harvester import logs as jedi_logs
from pandawms.core.tasks.sandbox import public_host


def _url(ctx: RequestContext, name: str) -> str:
    settings = ctx.rt.settings
    host = public_host(settings, ctx.rt.node)
    if settings.tls_cert:
        return f"https://{host}:{settings.https_port}/cache/{jedi_logs.SUBDIR}/{name}"
    return f"http://{host}:{settings.port}/cache/{jedi_logs.SUBDIR}/{name}"


@v1("file_server", "upload_jedi_log", "POST", file=Param("file"))
def upload_jedi_log(ctx: RequestContext, file: UploadedFile) -> Result:
    """Append a piece of a worker log (zlib-compressed, as Harvester sends it); ``data`` is its URL."""
    name, _ = jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok(_url(ctx, name))


@v1("file_server", "update_jedi_log", "POST", file=Param("file"))
def update_jedi_log(ctx: RequestContext, file: UploadedFile) -> Result:
    """Append more of a log (the real server's name for the same append)."""
    jedi_logs.append(ctx.rt, ctx.who, file.filename, file.data)
    return ok()


@v1("file_server", "download_jedi_log", "GET", log_name=Param("str"), offset=Param("int", 0))
def download_jedi_log(ctx: RequestContext, log_name: str, offset: int) -> Result:
    """A log's text from ``offset`` on."""
    return ok(jedi_logs.read(ctx.rt, log_name, offset))
