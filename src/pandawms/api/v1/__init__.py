"""The v1 API: ``/api/v1/<module>/<method>``, JSON in, ``{"success","message","data"}`` out.

Each URL module is one file here, named as the module in the URL, with a
:class:`~pandawms.api.v1.registry.V1Module` holding its methods. The list below is the whole
API: :data:`METHODS`, the table the app, the OpenAPI document and the access-rule test read, is
built from it and from nothing else.
"""

from __future__ import annotations

from pandawms.api.v1 import (
    async_process,
    creds,
    data_carousel,
    event,
    file_server,
    harvester,
    idds,
    job,
    metaconfig,
    pilot,
    statistics,
    system,
    task,
    workflow,
)
from pandawms.api.v1.registry import AsyncHandler, Handler, Method, Result, V1Module, build_table

#: Every URL module the server answers, in the order of the OpenAPI tags.
MODULES: tuple[V1Module, ...] = (
    system.methods,
    metaconfig.methods,
    job.methods,
    pilot.methods,
    harvester.methods,
    task.methods,
    file_server.methods,
    creds.methods,
    statistics.methods,
    event.methods,
    idds.methods,
    workflow.methods,
    data_carousel.methods,
    async_process.methods,
)

#: Every v1 method by ``(module, method)``.
METHODS: dict[tuple[str, str], Method] = build_table(MODULES)

__all__ = ["METHODS", "MODULES", "AsyncHandler", "Handler", "Method", "Result"]
