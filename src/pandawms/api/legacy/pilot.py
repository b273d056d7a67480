"""Legacy ``/server/panda`` calls of the job cycle: what pilots and Harvester call to take work.

getJob, updateJob and updateJobsInBulk (on the event loop, through the worker's group commit),
the status reads, the event-range calls, the Harvester worker's pilot
status, credentials for Harvester and the resource types for the pilot's memory monitor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from pandawms.api.authz import ANYONE, HARVESTER, PILOT
from pandawms.api.context import RequestContext
from pandawms.api.legacy.registry import LegacyCalls, Reply
from pandawms.api.pilot_codec import job_for_pilot, parse_update
from pandawms.core.creds import proxies as creds
from pandawms.core.dbthreads import run_db
from pandawms.core.events import dispatch as events_dispatch
from pandawms.core.events import store as events_store
from pandawms.core.events import update as events_update
from pandawms.core.harvester.workers import link_dispatched, set_pilot_status
from pandawms.core.jobs import dispatch, heartbeat, pilot_binding
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.jobs.read import MAX_IDS_PER_READ
from pandawms.core.queues import resource_types
from pandawms.db.engine import refusal
from pandawms.model.errors import PandaError, StatusCode, TooLarge
from pandawms.model.values import BadValue, whole_number

calls = LegacyCalls()

#: Largest ``eventRanges`` text one report may carry.
MAX_EVENT_REPORT_BYTES = 16 * 1024 * 1024


def _int_param(params: dict[str, Any], name: str, default: int = 0) -> int:
    raw = params.get(name)
    if raw is None or str(raw).strip() in ("", "NULL", "None"):
        return default
    try:
        return whole_number(raw if isinstance(raw, int | float | str) else str(raw), truncate=True)
    except BadValue as exc:
        raise PandaError(f"{name}: {exc}") from None


def _ids(params: dict[str, Any], name: str) -> list[int]:
    """PandaIDs given as a list, or as one string separated by spaces or commas."""
    raw = params.get(name)
    if raw is None:
        raise PandaError(f"{name} is required")
    items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
    if len(items) > MAX_IDS_PER_READ:
        raise TooLarge(f"{name} has more than {MAX_IDS_PER_READ} IDs")
    try:
        return [whole_number(str(item).strip()) for item in items if str(item).strip()]
    except BadValue as exc:
        raise PandaError(f"{name} must be a list of PandaIDs: {exc}") from None


def _flag(params: dict[str, Any], name: str) -> bool:
    return str(params.get(name, "")).strip().lower() in ("true", "1", "yes")


@calls.async_method("isAlive", ANYONE)
async def is_alive(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """``alive=yes``, as load balancers and old clients expect; on the event loop, so it answers
    even while every request thread waits on a slow database."""
    return Reply("alive=yes", "text")


def _dispatch_request(params: dict[str, Any]) -> tuple[dispatch.DispatchRequest, bool, Any, int]:
    """getJob's parameters: (request, bulk form?, harvester_id, worker_id)."""
    bulk = "nJobs" in params
    req = dispatch.DispatchRequest(
        site=str(params.get("siteName") or ""),
        n_jobs=_int_param(params, "nJobs", 1) if bulk else 1,
        prod_source_label=(str(params["prodSourceLabel"]) if params.get("prodSourceLabel") else None),
        computing_element=str(params.get("computingElement") or "") or None,
        node=str(params.get("node") or "") or None,
        memory_mb=max(_int_param(params, "mem"), 0),
        disk_mb=max(_int_param(params, "diskSpace"), 0),
        remaining_time=max(_int_param(params, "remaining_time"), 0),
        resource_type=str(params.get("resourceType") or "") or None,
        task_id=_int_param(params, "taskID") or None,
        prod_user_id=str(params.get("prodUserID") or "") or None,
        scheduler_id=str(params.get("schedulerID") or "") or None,
        background=_flag(params, "background"),
        job_type=str(params.get("jobType") or "") or None,
    )
    if not req.site:
        raise PandaError("siteName is required")
    # Checked before dispatching: nothing may fail between handing out jobs and answering.
    return req, bulk, params.get("harvester_id"), _int_param(params, "worker_id", -1)


def _needs_thread(
    ctx: RequestContext, req: dispatch.DispatchRequest, harvester_id: Any, worker_id: int
) -> bool:
    """Whether answering a getJob reads or writes the database after the dispatch itself."""
    if harvester_id and worker_id >= 0:
        return True
    counts_sent = req.prod_source_label in (None, "managed")
    return counts_sent and dispatch.recently_sent_cached(ctx.rt, req.site) is None


def _get_job_reply(
    ctx: RequestContext,
    req: dispatch.DispatchRequest,
    bulk: bool,
    harvester_id: Any,
    worker_id: int,
    found: list[dict[str, Any]],
) -> Reply:
    if not found:
        return Reply({"StatusCode": int(StatusCode.NO_JOBS), "errorDialog": "no jobs in PanDA"})
    if harvester_id and worker_id >= 0:  # a pilot of a Harvester worker (pull mode)
        link_dispatched(ctx.rt, str(harvester_id), worker_id, req.site, [j["PandaID"] for j in found])
    n_sent = (
        dispatch.count_recently_sent(ctx.rt, req.site) if req.prod_source_label in (None, "managed") else 0
    )
    described = [job_for_pilot(job, n_sent) for job in found]
    if bulk:
        return Reply({"StatusCode": 0, "jobs": described})
    return Reply(described[0])


@calls.async_method("getJob", PILOT)
async def get_job(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Dispatch one job (or ``nJobs`` in the bulk form) to the calling pilot.

    Runs on the event loop: the dispatch joins the worker's group commit
    (:func:`pandawms.core.jobs.dispatch.acquire_jobs_async`); a thread is used afterwards only when
    the answer needs the database again (a Harvester worker link, a stale ``nSent``).
    """
    req, bulk, harvester_id, worker_id = _dispatch_request(params)
    found = await dispatch.acquire_jobs_async(ctx.rt, req, ctx.who)
    if found and _needs_thread(ctx, req, harvester_id, worker_id):
        return await run_db(ctx.rt, _get_job_reply, ctx, req, bulk, harvester_id, worker_id, found)
    return _get_job_reply(ctx, req, bulk, harvester_id, worker_id, found)


def _parsed_update(ctx: RequestContext, params: dict[str, Any]) -> PilotUpdate | Reply:
    """The pilot's update, or the answer that needs no database (``jobId=NULL``, ignored state)."""
    if str(params.get("jobId", "")) == "NULL":
        return Reply({"StatusCode": 0, "command": "NULL"})
    upd = parse_update(params, pilot_binding.caller_for(ctx.rt, ctx.who))
    if upd.state not in heartbeat.PILOT_REPORTABLE:
        # The real server answers 0 and ignores unknown states; say why as well.
        return Reply({"StatusCode": 0, "command": "NULL", "errorDialog": f"state {upd.state!r} ignored"})
    return upd


def _update_reply(result: heartbeat.UpdateResult) -> Reply:
    return Reply({"StatusCode": int(result.status_code), "command": result.command})


@calls.async_method("updateJob", PILOT)
async def update_job_routed(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """updateJob through the worker's group commit: plain heartbeats in one kind of batch, state
    changes and final reports in another. A pilot is answered only after its batch committed.
    """
    upd = _parsed_update(ctx, params)
    if isinstance(upd, Reply):
        return upd
    return _update_reply(await heartbeat.update_job_grouped(ctx.rt, upd))


@calls.async_method("updateJobsInBulk", PILOT)
async def update_jobs_in_bulk(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """``jobList``: a JSON list of updateJob parameter dicts. Answers ``[true, [results]]``.

    Each entry joins the group commit like a single updateJob and gets its own result; a busy
    database fails the call (503).
    """
    raw = params.get("jobList")
    try:
        items = orjson.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise PandaError("jobList is not valid JSON") from None
    if not isinstance(items, list):
        raise PandaError("jobList must be a JSON list")
    if len(items) > 1000:
        raise TooLarge("jobList has more than 1000 entries")

    async def one(item: Any) -> Any:
        if not isinstance(item, dict):
            return {"StatusCode": int(StatusCode.INVALID), "errorDialog": "entry is not an object"}
        try:
            fields = {k: (v if isinstance(v, str) else str(v)) for k, v in item.items()}
            reply = await update_job_routed(ctx, fields)
            return reply.body
        except PandaError as exc:
            return {"StatusCode": exc.code, "errorDialog": exc.message}
        except Exception as exc:
            if refusal(exc) is None:
                raise
            return {
                "StatusCode": int(StatusCode.INVALID),
                "errorDialog": "the database refused a value of this entry",
            }

    results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
    return Reply([True, results], "json")


@calls.method("getStatus", ANYONE)
def get_status(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Statuses and attempts, space separated, always url-encoded."""
    ids = _ids(params, "ids")
    found = jobs_read.get_statuses(ctx.rt, ids)
    statuses = [found[i]["jobStatus"] if i in found else "notfound" for i in ids]
    attempts = [str(found[i]["attemptNr"] or 0) if i in found else "0" for i in ids]
    return Reply(
        {"StatusCode": 0, "status": " ".join(statuses), "attemptNr": " ".join(attempts)}, "urlencoded"
    )


@calls.method("checkJobStatus", ANYONE)
def check_job_status(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Status and command per job, always JSON."""
    ids = _ids(params, "ids")
    found = jobs_read.get_statuses(ctx.rt, ids)
    out = [
        {"status": found[i]["jobStatus"], "command": found[i]["commandToPilot"] or "NULL"}
        if i in found
        else {"status": "unknown", "command": "tobekilled"}
        for i in ids
    ]
    return Reply(out, "json")


@calls.method("getEventRanges", PILOT)
def get_event_ranges(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Event ranges for an event-service job: ``eventRanges`` is the list the pilot processes
    (empty when the pool is exhausted or the job is not a consumer, as with the real server)."""
    panda_id = _int_param(params, "pandaID", -1)
    if panda_id < 0:
        raise PandaError("pandaID is required")
    n_ranges = _int_param(params, "nRanges", 10)
    found = events_dispatch.acquire_ranges(ctx.rt, panda_id, n_ranges, ctx.who)
    return Reply({"StatusCode": 0, "eventRanges": found})


def _event_reports(params: dict[str, Any]) -> tuple[list[Any], int]:
    raw = params.get("eventRanges")
    if raw is None:
        raise PandaError("eventRanges is required")
    if isinstance(raw, str) and len(raw) > MAX_EVENT_REPORT_BYTES:
        raise TooLarge(f"eventRanges is larger than {MAX_EVENT_REPORT_BYTES} bytes")
    try:
        ranges = orjson.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise PandaError("eventRanges is not valid JSON") from None
    version = _int_param(params, "version", 0)
    if version not in (0, 1, 2):
        raise PandaError(f"version {version} is not one of 0, 1, 2")
    return events_update.flatten(ranges, version), version


@calls.method("updateEventRanges", PILOT)
def update_event_ranges(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Reports on event ranges in both shapes the pilot sends (``version`` 0: a flat list;
    1 and 2: chunks with their zip file). ``Returns`` has one entry per range (True applied,
    False refused, None not stored), ``Command`` a command per PandaID."""
    reports, _version = _event_reports(params)
    out = events_update.update_ranges(ctx.rt, reports, ctx.who)
    return Reply({"StatusCode": 0, "Returns": out.returns, "Command": out.commands})


@calls.method("updateEventRange", PILOT)
def update_event_range(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """One range's report (the older single form): ``Command`` for its job, or StatusCode 30."""
    range_id = str(params.get("eventRangeID") or "")
    status = str(params.get("eventStatus") or "")
    if not range_id or not status:
        raise PandaError("eventRangeID and eventStatus are required")
    report = {
        "eventRangeID": range_id,
        "eventStatus": status,
        "coreCount": params.get("coreCount"),
        "cpuConsumptionTime": params.get("cpuConsumptionTime"),
        "objstoreID": params.get("objstoreID"),
    }
    out = events_update.update_ranges(ctx.rt, [report], ctx.who)
    if out.returns[0] is False:
        return Reply({"StatusCode": int(StatusCode.FAILED), "errorDialog": "event range not updated"})
    command = next(iter(out.commands.values()), None)
    return Reply({"StatusCode": 0, "Command": command})


@calls.method("checkEventsAvailability", PILOT)
def check_events_availability(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """How many ranges the job set's pool still has: ``nEventRanges``."""
    panda_id = _int_param(params, "pandaID", -1)
    jobset_id = _int_param(params, "jobsetID", -1)
    task_id = _int_param(params, "taskID", -1)
    n = events_store.available_for(ctx.rt, panda_id, jobset_id, task_id)
    return Reply({"StatusCode": 0, "nEventRanges": n}, "json")


@calls.method("updateWorkerPilotStatus", PILOT)
def update_worker_pilot_status(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """The pilot inside a Harvester worker says it started or finished: kept on the worker."""

    worker_id = _int_param(params, "workerID", -1)
    harvester_id = str(params.get("harvesterID") or "")
    if worker_id < 0 or not harvester_id:
        raise PandaError("workerID and harvesterID are required")
    node = str(params.get("node_id") or "") or None
    if not set_pilot_status(ctx.rt, harvester_id, worker_id, str(params.get("status", "")), node):
        return Reply(
            {"StatusCode": int(StatusCode.INVALID), "errorDialog": f"no worker {worker_id} of {harvester_id}"}
        )
    return Reply({"StatusCode": 0})


def _cred_refusal(exc: PandaError) -> Reply:
    return Reply({"StatusCode": exc.code, "errorDialog": exc.message})


@calls.method("getKeyPair", HARVESTER)
def get_key_pair(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """A key pair by its two names, from the credential directory (``publicKey``, ``privateKey``)."""

    try:
        public, private = creds.get_key_pair(
            ctx.rt.settings, str(params.get("publicKeyName") or ""), str(params.get("privateKeyName") or "")
        )
    except PandaError as exc:
        return _cred_refusal(exc)
    return Reply({"StatusCode": 0, "publicKey": public, "privateKey": private})


@calls.method("getProxy", HARVESTER)
def get_proxy(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """The proxy of ``dn`` (default: the caller) with ``role``, always JSON (``userProxy``)."""

    role = str(params.get("role") or "") or None
    try:
        pem = creds.get_proxy(ctx.rt.settings, str(params.get("dn") or "") or ctx.who.dn, role)
    except PandaError as exc:
        return Reply(_cred_refusal(exc).body, "json")
    return Reply({"StatusCode": 0, "errorDialog": "", "userProxy": pem}, "json")


@calls.method("getResourceTypes", PILOT)
def get_resource_types(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Resource types for the pilot's memory monitor: ``ResourceTypes`` is the list of definitions
    (url-encoded replies carry it as JSON text, which pilot 3.11 parses)."""

    return Reply({"StatusCode": 0, "Returns": 0, "ResourceTypes": resource_types.as_dicts(ctx.rt)})
