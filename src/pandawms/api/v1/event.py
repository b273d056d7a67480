"""``/api/v1/event/*``: the event service, as Harvester and event-service pilots call it.

Ranges are taken and reported through :mod:`pandawms.core.events`. The answers are the shapes
Harvester's communicator reads: ``acquire_event_ranges`` and ``update_event_ranges`` answer a
dictionary with ``StatusCode`` (``eventRanges``; ``Returns`` and ``Commands``), which is what
``get_event_ranges`` and ``update_jobs`` of ``panda_communicator.py`` look into;
``get_available_event_range_count`` answers the number itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import PILOT, USER
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.events import dispatch as events_dispatch
from pandawms.core.events import store as events_store
from pandawms.core.events import update as events_update
from pandawms.model.errors import PandaError, TooLarge

methods = V1Module("event")


@methods.post(
    "acquire_event_ranges",
    PILOT,
    params=dict(
        job_id=Param("int"),
        jobset_id=Param("int", None),
        task_id=Param("int", None),
        n_ranges=Param("int", 10),
        timeout=Param("int", 60),
        scattered=Param("bool", False),
        segment_id=Param("int", None),
    ),
)
def acquire_event_ranges(ctx: RequestContext, **kw: Any) -> Result:
    """Up to ``n_ranges`` ranges of the job's pool, now held by the job (an empty list when the
    pool is exhausted, or the job does not consume ranges)."""
    found = events_dispatch.acquire_ranges(ctx.rt, kw["job_id"], kw["n_ranges"], ctx.who)
    return ok({"StatusCode": 0, "eventRanges": found})


@methods.post(
    "update_event_ranges",
    PILOT,
    params=dict(
        event_ranges=Param("json"),
        timeout=Param("int", 120),
        version=Param("int", 0),
    ),
)
def update_event_ranges(ctx: RequestContext, **kw: Any) -> Result:
    """Reports on ranges (``version`` 0 flat, 1 and 2 in chunks with their zip file): one entry
    per range in ``Returns`` (True applied, False refused, None not stored), ``Commands`` per job."""
    if kw["version"] not in (0, 1, 2):
        raise PandaError(f"Argument error: version {kw['version']} is not one of 0, 1, 2")
    reports = events_update.flatten(kw["event_ranges"], kw["version"])
    out = events_update.update_ranges(ctx.rt, reports, ctx.who)
    return ok({"StatusCode": 0, "Returns": out.returns, "Commands": out.commands})


@methods.post(
    "update_single_event_range",
    PILOT,
    params=dict(
        event_range_id=Param("str"),
        event_range_status=Param("str"),
        core_count=Param("int", None),
        cpu_consumption_time=Param("float", None),
        object_store_id=Param("int", None),
        timeout=Param("int", 60),
    ),
)
def update_single_event_range(ctx: RequestContext, **kw: Any) -> Result:
    """One range's report; ``success`` false when it does not match a range the job holds."""
    report = {
        "eventRangeID": kw["event_range_id"],
        "eventStatus": kw["event_range_status"],
        "coreCount": kw["core_count"],
        "cpuConsumptionTime": kw["cpu_consumption_time"],
        "objstoreID": kw["object_store_id"],
    }
    out = events_update.update_ranges(ctx.rt, [report], ctx.who)
    if out.returns[0] is False:
        return False, "event range not updated: not held by this job in this attempt", None
    return ok({"Command": next(iter(out.commands.values()), None)})


@methods.get(
    "get_available_event_range_count",
    PILOT,
    params=dict(
        job_id=Param("int"),
        jobset_id=Param("int", None),
        task_id=Param("int", None),
        timeout=Param("int", 60),
    ),
)
def get_available_event_range_count(ctx: RequestContext, **kw: Any) -> Result:
    """How many ranges the job's pool still has for consumers."""
    jobset = kw["jobset_id"] if kw["jobset_id"] is not None else -1
    task = kw["task_id"] if kw["task_id"] is not None else -1
    return ok(events_store.available_for(ctx.rt, kw["job_id"], jobset, task))


@methods.get("get_event_range_statuses", USER)
def get_event_range_statuses(ctx: RequestContext, *, job_task_ids: Annotated[Any, Param("json")]) -> Result:
    """``{PandaID: {eventRangeID: {status, error, dialog}}}`` for ``[{"task_id", "job_id"}...]``
    (``panda_id`` is read as well, as the real server's database layer names it). A user reads
    only the ranges of their own jobs."""
    if not isinstance(job_task_ids, list):
        raise PandaError("Argument error: job_task_ids must be a JSON list")
    if len(job_task_ids) > events_store.MAX_JOBS_PER_READ:
        raise TooLarge(f"job_task_ids has more than {events_store.MAX_JOBS_PER_READ} entries")
    pairs: list[tuple[int, int]] = []
    for item in job_task_ids:
        job = item.get("job_id", item.get("panda_id")) if isinstance(item, dict) else None
        task = item.get("task_id") if isinstance(item, dict) else None
        try:
            pairs.append((int(task), int(job)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise PandaError("Argument error: each entry needs an integer task_id and job_id") from None
    return ok(events_store.statuses_for(ctx.rt, pairs, ctx.who))
