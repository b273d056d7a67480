"""The v1 ``pilot/update_worker_node`` and ``pilot/update_worker_node_gpu`` methods.

An ATLAS pilot posts its node's description with these parameter names before its first
getJob; the handlers only delegate to :mod:`pandawms.core.queues.worker_nodes`. The reply is the
plain envelope with a message, as the real server gives. Imported by :mod:`pandawms.api.v1`.
"""

from __future__ import annotations

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.queues import worker_nodes

_TEXT = Param("str")
_OPT_TEXT = Param("str", None)
_OPT_INT = Param("int", None)


@v1(
    "pilot",
    "update_worker_node",
    "POST",
    site=_TEXT,
    host_name=_TEXT,
    cpu_model=_TEXT,
    panda_queue=_OPT_TEXT,
    n_logical_cpus=_OPT_INT,
    n_sockets=_OPT_INT,
    cores_per_socket=_OPT_INT,
    threads_per_core=_OPT_INT,
    cpu_architecture=_OPT_TEXT,
    cpu_architecture_level=_OPT_TEXT,
    clock_speed=Param("float", None),
    total_memory=_OPT_INT,
    total_local_disk=_OPT_INT,
    timeout=_OPT_INT,
)
def update_worker_node(ctx: RequestContext, timeout: int | None = None, **report: object) -> Result:
    """Upsert the node's CPU description and its link to the queue it serves."""
    return ok(None, worker_nodes.update_worker_node(ctx.rt, report))


@v1(
    "pilot",
    "update_worker_node_gpu",
    "POST",
    site=_TEXT,
    host_name=_TEXT,
    vendor=_TEXT,
    model=_TEXT,
    count=Param("int"),
    vram=_OPT_INT,
    architecture=_OPT_TEXT,
    framework=_OPT_TEXT,
    framework_version=_OPT_TEXT,
    driver_version=_OPT_TEXT,
    timeout=_OPT_INT,
)
def update_worker_node_gpu(ctx: RequestContext, timeout: int | None = None, **report: object) -> Result:
    """Upsert one kind of GPU of the node."""
    return ok(None, worker_nodes.update_worker_node_gpu(ctx.rt, report))
