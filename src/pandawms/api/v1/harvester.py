"""``/api/v1/harvester/*``, as Harvester calls them.

Harvester's PanDA communicator posts JSON bodies with these parameter names and reads the
``{"success", "message", "data"}`` envelope; the handlers only convert and delegate to
:mod:`pandawms.core.harvester.workers`, :mod:`pandawms.core.harvester.instances` and
:mod:`pandawms.core.harvester.commands`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import HARVESTER, PRODUCTION_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.common import HARVESTER_ID
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.harvester import commands as harvester_commands
from pandawms.core.harvester import instances as harvester
from pandawms.core.harvester import workers
from pandawms.core.harvester.reports import add_dialogs as store
from pandawms.core.harvester.reports import add_metrics
from pandawms.core.harvester.workers import update_workers as apply
from pandawms.core.queues import slots as target_slots
from pandawms.model.errors import PandaError

methods = V1Module("harvester")


@methods.post("update_workers", HARVESTER)
def update_workers(
    ctx: RequestContext,
    *,
    harvester_id: Annotated[str, HARVESTER_ID],
    workers: Annotated[Any, Param("json", max_items=2000)],
) -> Result:
    """Upsert the reported workers and their job lists; one ``true`` per worker."""

    return ok(apply(ctx.rt, harvester_id, workers))


@methods.post("heartbeat", HARVESTER)
def heartbeat(
    ctx: RequestContext, *, harvester_id: Annotated[str, HARVESTER_ID], data: dict[str, Any] | None = None
) -> Result:
    """The instance is alive; its metadata (start time, version) is recorded."""
    harvester.heartbeat(ctx.rt, harvester_id, ctx.who, data)
    return ok()


@methods.get("get_current_worker_id", HARVESTER)
def get_current_worker_id(ctx: RequestContext, *, harvester_id: Annotated[str, HARVESTER_ID]) -> Result:
    """The highest workerID known for the instance (null when none), so a rebuilt Harvester goes on from it."""
    return ok(workers.current_worker_id(ctx.rt, harvester_id))


@methods.get("get_worker_statistics", HARVESTER)
def get_worker_statistics(ctx: RequestContext) -> Result:
    """Recent worker counts: ``{queue: {harvesterID: {jobType: {resourceType: {status: n}}}}}``."""
    return ok(harvester.worker_stats(ctx.rt))


@methods.post("report_worker_statistics", HARVESTER)
def report_worker_statistics(
    ctx: RequestContext,
    *,
    harvester_id: Annotated[str, HARVESTER_ID],
    panda_queue: str,
    statistics: Annotated[Any, Param("json")],
) -> Result:
    """Replace the instance's worker counts at one queue (``statistics`` is a JSON string)."""
    harvester.report_stats(ctx.rt, harvester_id, panda_queue, statistics)
    return ok(None, "OK")


@methods.post("acquire_commands", HARVESTER)
def acquire_commands(
    ctx: RequestContext, *, harvester_id: Annotated[str, HARVESTER_ID], n_commands: int, timeout: int = 30
) -> Result:
    """The instance's oldest new commands, each handed out once."""
    return ok(harvester_commands.acquire(ctx.rt, harvester_id, n_commands))


@methods.post("acknowledge_commands", HARVESTER)
def acknowledge_commands(
    ctx: RequestContext,
    *,
    command_ids: Annotated[list[int], Param("int_list", max_items=harvester_commands.MAX_COMMANDS_PER_POLL)],
    timeout: int = 30,
) -> Result:
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


@methods.post("add_sweep_command", PRODUCTION_WRITE)
def add_sweep_command(
    ctx: RequestContext, *, panda_queue: str, status_list: Any, ce_list: Any, submission_host_list: Any
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


@methods.post("add_target_slots", PRODUCTION_WRITE)
def add_target_slots(
    ctx: RequestContext,
    *,
    panda_queue: str,
    slots: int,
    global_share: str | None = None,
    resource_type: str | None = None,
    expiration_date: str | None = None,
) -> Result:
    """Set a queue's target slots for brokerage (-1 removes them); ``expiration_date`` in days.

    Target slots steer brokerage for everyone: production only, as on the real server.
    """
    message = target_slots.set_slots(ctx.rt, panda_queue, slots, global_share, resource_type, expiration_date)
    return ok(None, message)


@methods.post("update_service_metrics", HARVESTER)
def update_service_metrics(
    ctx: RequestContext, *, harvester_id: Annotated[str, HARVESTER_ID], metrics: Annotated[Any, Param("json")]
) -> Result:
    """Keep the instance's service metrics (``[[creationTime, hostName, metrics JSON], ...]``).

    ``data`` is one ``true`` per stored metric (Harvester sends one, and the real server
    answers ``[true]``).
    """

    stored = add_metrics(ctx.rt, harvester_id, metrics)
    return ok([True] * stored or [True])


@methods.post("add_dialogs", HARVESTER)
def add_dialogs(
    ctx: RequestContext, *, harvester_id: Annotated[str, HARVESTER_ID], dialogs: Annotated[Any, Param("json")]
) -> Result:
    """Keep the instance's messages for operators."""

    store(ctx.rt, harvester_id, dialogs)
    return ok()
