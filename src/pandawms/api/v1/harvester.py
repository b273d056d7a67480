"""``/api/v1/harvester/*``, as Harvester calls them.

Harvester's PanDA communicator posts JSON bodies with these parameter names and reads the
``{"success", "message", "data"}`` envelope; the handlers only convert and delegate to
:mod:`pandawms.core.harvester.workers`, :mod:`pandawms.core.harvester.instances` and
:mod:`pandawms.core.harvester.commands`.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.common import HARVESTER_ID
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.harvester import commands as harvester_commands
from pandawms.core.harvester import instances as harvester
from pandawms.core.harvester import workers
from pandawms.core.queues import slots as target_slots
from pandawms.model.errors import PandaError

methods = V1Module("harvester")


@methods.post("update_workers", harvester_id=HARVESTER_ID, workers=Param("json", max_items=2000))
def update_workers(ctx: RequestContext, harvester_id: str, workers: Any) -> Result:
    """Upsert the reported workers and their job lists; one ``true`` per worker."""
    from pandawms.core.harvester.workers import update_workers as apply

    return ok(apply(ctx.rt, harvester_id, workers))


@methods.post("heartbeat", harvester_id=HARVESTER_ID, data=Param("dict", None))
def heartbeat(ctx: RequestContext, harvester_id: str, data: dict[str, Any] | None) -> Result:
    """The instance is alive; its metadata (start time, version) is recorded."""
    harvester.heartbeat(ctx.rt, harvester_id, ctx.who, data)
    return ok()


@methods.get("get_current_worker_id", harvester_id=HARVESTER_ID)
def get_current_worker_id(ctx: RequestContext, harvester_id: str) -> Result:
    """The highest workerID known for the instance (null when none), so a rebuilt Harvester goes on from it."""
    return ok(workers.current_worker_id(ctx.rt, harvester_id))


@methods.get("get_worker_statistics")
def get_worker_statistics(ctx: RequestContext) -> Result:
    """Recent worker counts: ``{queue: {harvesterID: {jobType: {resourceType: {status: n}}}}}``."""
    return ok(harvester.worker_stats(ctx.rt))


@methods.post(
    "report_worker_statistics",
    harvester_id=HARVESTER_ID,
    panda_queue=Param("str"),
    statistics=Param("json"),
)
def report_worker_statistics(
    ctx: RequestContext, harvester_id: str, panda_queue: str, statistics: Any
) -> Result:
    """Replace the instance's worker counts at one queue (``statistics`` is a JSON string)."""
    harvester.report_stats(ctx.rt, harvester_id, panda_queue, statistics)
    return ok(None, "OK")


@methods.post(
    "acquire_commands",
    harvester_id=HARVESTER_ID,
    n_commands=Param("int"),
    timeout=Param("int", 30),
)
def acquire_commands(ctx: RequestContext, harvester_id: str, n_commands: int, timeout: int) -> Result:
    """The instance's oldest new commands, each handed out once."""
    return ok(harvester_commands.acquire(ctx.rt, harvester_id, n_commands))


@methods.post(
    "acknowledge_commands",
    command_ids=Param("int_list", max_items=harvester_commands.MAX_COMMANDS_PER_POLL),
    timeout=Param("int", 30),
)
def acknowledge_commands(ctx: RequestContext, command_ids: list[int], timeout: int) -> Result:
    """Commands the instance has acted on are removed."""
    harvester_commands.acknowledge(ctx.rt, command_ids)
    return ok()


def _filter(name: str, value: Any) -> list[str] | str:
    """A sweep filter: a list of names, or the string ``ALL``."""
    if value == "ALL":
        return "ALL"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PandaError(f"Argument error: {name} must be a list of strings or 'ALL'")
    return list(value)


@methods.post(
    "add_sweep_command",
    panda_queue=Param("str"),
    status_list=Param("any"),
    ce_list=Param("any"),
    submission_host_list=Param("any"),
)
def add_sweep_command(
    ctx: RequestContext, panda_queue: str, status_list: Any, ce_list: Any, submission_host_list: Any
) -> Result:
    """Ask the instances serving a queue to kill its workers (by status, CE and submission host)."""
    statuses = _filter("status_list", status_list)
    if statuses == "ALL":
        statuses = sorted(workers.WORKER_STATUSES - workers.WORKER_FINAL)
    found = harvester_commands.sweep_queue(
        ctx.rt,
        panda_queue,
        list(statuses),
        _filter("ce_list", ce_list),
        _filter("submission_host_list", submission_host_list),
    )
    if not found:
        return False, f"no Harvester instance has workers at {panda_queue[:128]}", None
    return ok(None, f"KILL_WORKERS queued for {', '.join(found)}")


@methods.post(
    "add_target_slots",
    panda_queue=Param("str"),
    slots=Param("int"),
    global_share=Param("str", None),
    resource_type=Param("str", None),
    expiration_date=Param("str", None),
)
def add_target_slots(
    ctx: RequestContext,
    panda_queue: str,
    slots: int,
    global_share: str | None,
    resource_type: str | None,
    expiration_date: str | None,
) -> Result:
    """Set a queue's target slots for brokerage (-1 removes them); ``expiration_date`` in days."""
    message = target_slots.set_slots(ctx.rt, panda_queue, slots, global_share, resource_type, expiration_date)
    return ok(None, message)


@methods.post("update_service_metrics", harvester_id=HARVESTER_ID, metrics=Param("json"))
def update_service_metrics(ctx: RequestContext, harvester_id: str, metrics: Any) -> Result:
    """Keep the instance's service metrics (``[[creationTime, hostName, metrics JSON], ...]``).

    ``data`` is one ``true`` per stored metric (Harvester sends one, and the real server
    answers ``[true]``).
    """
    from pandawms.core.harvester.reports import add_metrics

    stored = add_metrics(ctx.rt, harvester_id, metrics)
    return ok([True] * stored or [True])


@methods.post("add_dialogs", harvester_id=HARVESTER_ID, dialogs=Param("json"))
def add_dialogs(ctx: RequestContext, harvester_id: str, dialogs: Any) -> Result:
    """Keep the instance's messages for operators."""
    from pandawms.core.harvester.reports import add_dialogs as store

    store(ctx.rt, harvester_id, dialogs)
    return ok()
