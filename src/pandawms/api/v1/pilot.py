"""``/api/v1/pilot/*``: what pilots and Harvester call to take, report and describe work.

``acquire_jobs``, ``update_job`` and ``update_jobs_bulk`` are ``async def`` and run on the event
loop, sharing the worker's group commit with the legacy getJob and updateJob. An ATLAS pilot
posts its node's description (``update_worker_node``, ``update_worker_node_gpu``) before its
first getJob, and the pilot inside a Harvester worker reports its start and end
(``update_worker_status``); those only delegate to :mod:`pandawms.core.queues.worker_nodes` and
:mod:`pandawms.core.harvester.workers`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pandawms.api.authz import PILOT
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.pilot_codec import job_for_pilot, parse_update, v1_to_legacy
from pandawms.api.v1.common import HARVESTER_ID, IDS, STATUS_TIMEOUT
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.dbthreads import run_db
from pandawms.core.harvester import workers
from pandawms.core.harvester.workers import link_dispatched
from pandawms.core.jobs import dispatch, heartbeat, pilot_binding
from pandawms.core.jobs import read as jobs_read
from pandawms.core.links import check_harvester_id
from pandawms.core.queues import worker_nodes
from pandawms.db.engine import refusal
from pandawms.model.errors import PandaError, StatusCode, TooLarge

methods = V1Module("pilot")


@methods.post(
    "acquire_jobs",
    PILOT,
    params=dict(
        site_name=Param("str"),
        timeout=Param("int", 60),
        memory=Param("int", None),
        disk_space=Param("int", None),
        prod_source_label=Param("str", None),
        node=Param("str", None),
        computing_element=Param("str", None),
        prod_user_id=Param("str", None),
        get_proxy_key=Param("bool", False),
        task_id=Param("int", None),
        n_jobs=Param("int", 1),
        background=Param("bool", False),
        resource_type=Param("str", None),
        harvester_id=Param("str", None),
        worker_id=Param("int", None),
        scheduler_id=Param("str", None),
        job_type=Param("str", None),
        via_topic=Param("bool", False),
        remaining_time=Param("int", None),
    ),
)
async def pilot_acquire_jobs(ctx: RequestContext, **kw: Any) -> Result:
    """Dispatch jobs to a pilot or Harvester: always the bulk form.

    Runs on the event loop and shares the worker's group commit with the legacy getJob
    (:func:`pandawms.core.jobs.dispatch.acquire_jobs_async`), Harvester's requests for tens of jobs
    included; a thread is used afterwards only when the answer needs the database again.
    """
    if kw["harvester_id"] is not None:
        check_harvester_id(kw["harvester_id"])
    req = dispatch.DispatchRequest(
        site=kw["site_name"],
        n_jobs=kw["n_jobs"],
        prod_source_label=kw["prod_source_label"],
        computing_element=kw["computing_element"],
        node=kw["node"],
        memory_mb=max(kw["memory"] or 0, 0),
        disk_mb=max(kw["disk_space"] or 0, 0),
        remaining_time=max(kw["remaining_time"] or 0, 0),
        resource_type=kw["resource_type"],
        task_id=kw["task_id"],
        prod_user_id=kw["prod_user_id"],
        scheduler_id=kw["scheduler_id"] or kw["harvester_id"],
        background=kw["background"],
        job_type=kw["job_type"],
    )
    found = await dispatch.acquire_jobs_async(ctx.rt, req, ctx.who)
    if not found:
        return False, "No jobs in PanDA", None
    link = bool(kw["harvester_id"]) and kw["worker_id"] is not None
    counts_sent = req.prod_source_label in (None, "managed")
    if link or (counts_sent and dispatch.recently_sent_cached(ctx.rt, req.site) is None):
        return await run_db(
            ctx.rt, _acquire_reply, ctx, req, kw["harvester_id"] if link else None, kw["worker_id"], found
        )
    return _acquire_reply(ctx, req, None, None, found)


def _acquire_reply(
    ctx: RequestContext,
    req: dispatch.DispatchRequest,
    harvester_id: str | None,
    worker_id: int | None,
    found: list[dict[str, Any]],
) -> Result:
    """acquire_jobs' answer; links the jobs to the Harvester worker when one is named."""
    if harvester_id and worker_id is not None:
        link_dispatched(ctx.rt, harvester_id, worker_id, req.site, [j["PandaID"] for j in found])
    n_sent = (
        dispatch.count_recently_sent(ctx.rt, req.site) if req.prod_source_label in (None, "managed") else 0
    )
    return ok({"StatusCode": 0, "jobs": [job_for_pilot(j, n_sent) for j in found]})


_UPDATE_PARAMS = {
    name: Param("any", None)
    for name in (
        "job_output_report node cpu_consumption_time cpu_consumption_unit scheduler_id pilot_id site_name pilot_log "
        "meta_data cpu_conversion_factor trans_exit_code pilot_error_code pilot_error_diag exe_error_code exe_error_diag "
        "pilot_timing start_time end_time n_events n_input_files batch_id attempt_nr job_metrics stdout job_sub_status "
        "core_count max_rss max_vmem max_swap max_pss avg_rss avg_vmem avg_swap avg_pss tot_rchar tot_wchar tot_rbytes "
        "tot_wbytes rate_rchar rate_wchar rate_rbytes rate_wbytes corrupted_files mean_core_count cpu_architecture_level "
        "grid source_site destination_site timeout"
    ).split()
}


def _parsed_update(ctx: RequestContext, params: dict[str, Any]) -> heartbeat.PilotUpdate | Result:
    """The update to apply, or the refusal that needs no database."""
    legacy = v1_to_legacy({k: v for k, v in params.items() if v is not None})
    try:
        upd = parse_update(legacy, pilot_binding.caller_for(ctx.rt, ctx.who))
    except PandaError as exc:
        return False, exc.message, {"StatusCode": int(StatusCode.INVALID)}
    if upd.state not in heartbeat.PILOT_REPORTABLE:
        return False, f"invalid job_status {upd.state!r}", {"StatusCode": int(StatusCode.INVALID)}
    return upd


async def _update_one(ctx: RequestContext, params: dict[str, Any]) -> Result:
    """One update through the worker's group commit, the same entry as the legacy updateJob."""
    upd = _parsed_update(ctx, params)
    if isinstance(upd, tuple):
        return upd
    result = await heartbeat.update_job_grouped(ctx.rt, upd)
    return ok({"StatusCode": int(result.status_code), "command": result.command})


@methods.post(
    "update_job", PILOT, params=dict(job_id=Param("int"), job_status=Param("str"), **_UPDATE_PARAMS)
)
async def pilot_update_job(ctx: RequestContext, **kw: Any) -> Result:
    """One heartbeat or state change."""
    return await _update_one(ctx, kw)


def _refused_item(exc: BaseException) -> str:
    """A database refusal of one item, in one line (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"the database refused a value of this entry: {first[:200]}"


@methods.post("update_jobs_bulk", PILOT)
async def pilot_update_jobs_bulk(
    ctx: RequestContext,
    *,
    job_list: Annotated[Any, Param("json", max_items=1000)],
    harvester_id: str | None = None,
) -> Result:
    """Several updates; one v1 envelope per job, in order.

    Every entry joins the worker's heartbeat or state-change batches like a single update
    (so one call of 100 entries costs about one transaction, not 100) and is answered on its
    own: a refused entry fails alone. A busy database fails the call (503, to be retried).
    """
    if not isinstance(job_list, list):
        raise PandaError("Argument error: job_list must be a list of objects")
    if len(job_list) > 1000:
        raise TooLarge("Argument error: job_list has more than 1000 entries")

    async def one(index: int, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return {"success": False, "message": f"entry {index} is not an object", "data": None}
        try:
            success, message, data = await _update_one(ctx, item)
        except PandaError as exc:
            success, message, data = False, exc.message, {"StatusCode": exc.code}
        except Exception as exc:
            if refusal(exc) is None:
                raise
            success, message, data = False, _refused_item(exc), {"StatusCode": int(StatusCode.INVALID)}
        return {"success": success, "message": message, "data": data}

    outcomes = await asyncio.gather(
        *(one(i, item) for i, item in enumerate(job_list)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return ok(outcomes)


@methods.get("get_job_status", PILOT)
def pilot_get_job_status(
    ctx: RequestContext, *, job_ids: Annotated[list[int], IDS], timeout: Annotated[int, STATUS_TIMEOUT]
) -> Result:
    """Status and attempt of each job as the pilot asks for it."""
    found = jobs_read.get_statuses(ctx.rt, job_ids)
    out = []
    for panda_id in job_ids:
        row = found.get(panda_id)
        out.append(
            {
                "job_id": panda_id,
                "status": row["jobStatus"] if row else "not found",
                "attempt_number": (row["attemptNr"] or 0) if row else 0,
            }
        )
    return ok(out)


@methods.post("update_worker_status", PILOT)
def update_worker_status(
    ctx: RequestContext,
    *,
    worker_id: int,
    harvester_id: Annotated[str, HARVESTER_ID],
    status: str,
    timeout: int = 60,
    node_id: str | None = None,
) -> Result:
    """The pilot inside a worker says it started or finished."""
    if not workers.set_pilot_status(ctx.rt, harvester_id, worker_id, status, node_id):
        return False, f"worker {worker_id} of {harvester_id[:50]} is not known", None
    return ok()


_TEXT = Param("str")


_OPT_TEXT = Param("str", None)


_OPT_INT = Param("int", None)


@methods.post(
    "update_worker_node",
    PILOT,
    params=dict(
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
    ),
)
def update_worker_node(ctx: RequestContext, *, timeout: int | None = None, **report: object) -> Result:
    """Upsert the node's CPU description and its link to the queue it serves."""
    return ok(None, worker_nodes.update_worker_node(ctx.rt, report))


@methods.post(
    "update_worker_node_gpu",
    PILOT,
    params=dict(
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
    ),
)
def update_worker_node_gpu(ctx: RequestContext, *, timeout: int | None = None, **report: object) -> Result:
    """Upsert one kind of GPU of the node."""
    return ok(None, worker_nodes.update_worker_node_gpu(ctx.rt, report))
