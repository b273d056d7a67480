"""The v1 API: ``/api/v1/<module>/<method>``, JSON in, ``{"success","message","data"}`` out.

Methods are registered with their HTTP verb and declared parameters; the app checks both
before calling the handler, which returns ``(success, message, data)`` or raises PandaError.
A handler written ``async def`` runs on the event loop (the hot pilot calls, which wait on the
worker's group commit instead of holding a thread); a plain ``def`` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from pandawms.api.context import RequestContext
from pandawms.api.jobspec_codec import decode_state_list, encode_job
from pandawms.api.params import Param
from pandawms.api.pilot_codec import job_for_pilot, parse_update, v1_to_legacy
from pandawms.core.dbthreads import run_db
from pandawms.core.jobs import dispatch, heartbeat, kill, pilot_binding, submit
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.read import MAX_IDS_PER_READ
from pandawms.db.engine import refused_status
from pandawms.model.errors import PandaError, StatusCode, TooLarge

log = logging.getLogger("pandawms.api.v1")

Result = tuple[bool, str, Any]
Handler = Callable[..., Result]
AsyncHandler = Callable[..., Awaitable[Result]]


@dataclass(frozen=True)
class Method:
    """A registered v1 method."""

    module: str
    name: str
    verb: str
    params: dict[str, Param]
    handler: Handler | AsyncHandler
    #: True for an ``async def`` handler: the app awaits it on the event loop, no thread.
    on_loop: bool = False


METHODS: dict[tuple[str, str], Method] = {}

H = TypeVar("H", Handler, AsyncHandler)


def v1(module: str, name: str, verb: str, **params: Param) -> Callable[[H], H]:
    """Register a handler as ``/api/v1/<module>/<name>``; ``async def`` handlers run on the loop."""

    def register(func: H) -> H:
        on_loop = inspect.iscoroutinefunction(func)
        METHODS[(module, name)] = Method(module, name, verb, params, func, on_loop)
        return func

    return register


def ok(data: Any = None, message: str = "") -> Result:
    """A successful reply."""
    return True, message, data


IDS = Param("int_list", max_items=MAX_IDS_PER_READ)


# --- system ---------------------------------------------------------------------------------


@v1("system", "is_alive", "GET")
def is_alive(ctx: RequestContext) -> Result:
    """Liveness for panda-client's hello and Harvester's check."""
    return ok()


@v1("system", "get_attributes", "GET", parameters=Param("extra", max_items=100))
def get_attributes(ctx: RequestContext, parameters: dict[str, Any]) -> Result:
    """The caller as the server sees it, in the gridsite variables panda-client's get_cert_attributes reads.

    Any arguments are echoed back under ``parameters`` (as text), as the real server does.
    """
    who = ctx.who
    env: dict[str, Any] = {
        "SSL_CLIENT_S_DN": who.dn or None,
        "PANDA_USER_NAME": who.name,
        "PANDA_AUTH_METHOD": who.method,
        "PANDA_PRODUCTION_ROLE": who.is_production,
        "REMOTE_ADDR": who.remote_host,
        "HTTPS": "on" if ctx.secure else "off",
    }
    if who.dn:
        env["GRST_CRED_0"] = f"X509USER 0 0 0 {who.dn}"
    for index, fqan in enumerate(who.fqans, start=1):
        env[f"GRST_CRED_{index}"] = f"VOMS 0 0 0 {fqan}"
    echoed = {key: str(value)[:1000] for key, value in sorted(parameters.items())}
    return ok({"parameters": echoed, "environment": env})


@v1("metaconfig", "get_site_specs", "GET", type=Param("str", None))
def get_site_specs(ctx: RequestContext, type: str | None) -> Result:
    """Queue definitions by name, optionally of one type (production, analysis, unified)."""
    from pandawms.core.queues.catalogue import all_documents

    body, _ = all_documents(ctx.rt)
    specs = orjson.loads(body)
    if type:
        specs = {name: spec for name, spec in specs.items() if spec.get("type") == type}
    return ok(specs)


# --- job --------------------------------------------------------------------------------------


@v1("job", "submit", "POST", jobs=Param("json"))
def job_submit(ctx: RequestContext, jobs: Any) -> Result:
    """Submit jobs sent as panda-client's JSON state list (itself a JSON string)."""
    decoded = decode_state_list(jobs)
    return ok(submit.submit_jobs(ctx.rt, decoded, ctx.who))


@v1("job", "get_description", "ANY", job_ids=IDS)
def job_get_description(ctx: RequestContext, job_ids: list[int]) -> Result:
    """Full descriptions of live jobs (null for unknown IDs)."""
    found = jobs_read.get_descriptions(ctx.rt, job_ids, include_archive=False)
    return ok([encode_job(j) if j else None for j in found])


@v1("job", "get_description_incl_archive", "ANY", job_ids=IDS)
def job_get_description_incl_archive(ctx: RequestContext, job_ids: list[int]) -> Result:
    """Full descriptions including archived jobs."""
    found = jobs_read.get_descriptions(ctx.rt, job_ids, include_archive=True)
    return ok([encode_job(j) if j else None for j in found])


@v1(
    "job",
    "kill",
    "POST",
    job_ids=IDS,
    code=Param("int", None),
    use_email_as_id=Param("bool", False),
    kill_options=Param("str_list", []),
)
def job_kill(
    ctx: RequestContext, job_ids: list[int], code: int | None, use_email_as_id: bool, kill_options: list[str]
) -> Result:
    """Kill jobs; one boolean per ID."""
    return ok(kill.kill_jobs(ctx.rt, job_ids, ctx.who, code))


#: ``timeout`` of the status reads: declared by the real server (its database wait); reads here
#: are bounded by the pool timeout, so it is accepted and not used.
STATUS_TIMEOUT = Param("int", 60)


@v1("job", "get_status", "GET", job_ids=IDS, timeout=STATUS_TIMEOUT)
def job_get_status(ctx: RequestContext, job_ids: list[int], timeout: int) -> Result:
    """Status and pending command per job (Harvester's check_jobs); ``command`` null when none."""
    found = jobs_read.get_statuses(ctx.rt, job_ids)
    out: list[dict[str, str | None]] = []
    for panda_id in job_ids:
        row = found.get(panda_id)
        if row is None:
            out.append({"status": "unknown", "command": "tobekilled"})
        else:
            out.append({"status": row["jobStatus"], "command": row["commandToPilot"] or None})
    return ok(out)


@v1("job", "reassign", "POST", job_ids=IDS, site=Param("str", None))
def job_reassign(ctx: RequestContext, job_ids: list[int], site: str | None) -> Result:
    """Jobs no pilot holds yet go back to brokerage (or to the queue ``site``)."""
    from pandawms.core.jobs.commands import reassign_jobs

    if site is not None and not 0 < len(site) <= 128:
        return False, "site must be 1 to 128 characters", None
    done = reassign_jobs(ctx.rt, job_ids, ctx.who, site)
    return ok(None, f"{sum(done)} of {len(done)} jobs reassigned")


@v1("job", "set_command", "POST", job_id=Param("int"), command=Param("str"))
def job_set_command(ctx: RequestContext, job_id: int, command: str) -> Result:
    """A command for the job's pilot, given in the answer to its next heartbeat."""
    from pandawms.core.jobs.commands import set_command

    success, message = set_command(ctx.rt, job_id, command)
    return success, message, None


@v1("job", "generate_offline_execution_script", "GET", job_id=Param("int"), days=Param("int", None))
def job_generate_offline_execution_script(ctx: RequestContext, job_id: int, days: int | None) -> Result:
    """A shell script that runs the job again outside PanDA; ``data`` is ``{"script": ...}``."""
    from pandawms.core.jobs.offline_script import offline_script

    (job,) = jobs_read.get_descriptions(ctx.rt, [job_id], include_archive=True)
    if job is None:
        return False, f"ERROR: Cannot get PandaID={job_id} in DB", None
    script = offline_script(job)
    if script.startswith("ERROR"):
        return False, script, None
    return ok({"script": script})


# --- pilot ------------------------------------------------------------------------------------


@v1(
    "pilot",
    "acquire_jobs",
    "POST",
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
)
async def pilot_acquire_jobs(ctx: RequestContext, **kw: Any) -> Result:
    """Dispatch jobs to a pilot or Harvester: always the bulk form.

    Runs on the event loop and shares the worker's group commit with the legacy getJob
    (:func:`pandawms.core.jobs.dispatch.acquire_jobs_async`), Harvester's requests for tens of jobs
    included; a thread is used afterwards only when the answer needs the database again.
    """
    if kw["harvester_id"] is not None:
        from pandawms.core.links import check_harvester_id

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
    if link or (counts_sent and dispatch.recently_sent_cached(req.site) is None):
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
        from pandawms.core.harvester.workers import link_dispatched

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


@v1("pilot", "update_job", "POST", job_id=Param("int"), job_status=Param("str"), **_UPDATE_PARAMS)
async def pilot_update_job(ctx: RequestContext, **kw: Any) -> Result:
    """One heartbeat or state change."""
    return await _update_one(ctx, kw)


def _refused_item(exc: BaseException) -> str:
    """A database refusal of one item, in one line (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"the database refused a value of this entry: {first[:200]}"


@v1(
    "pilot",
    "update_jobs_bulk",
    "POST",
    job_list=Param("json", max_items=1000),
    harvester_id=Param("str", None),
)
async def pilot_update_jobs_bulk(ctx: RequestContext, job_list: Any, harvester_id: str | None) -> Result:
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
            if refused_status(exc) is None:
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


@v1("pilot", "get_job_status", "GET", job_ids=IDS, timeout=STATUS_TIMEOUT)
def pilot_get_job_status(ctx: RequestContext, job_ids: list[int], timeout: int) -> Result:
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


# Methods kept in their own modules register themselves on import (they use the names above).
from pandawms.api import v1_creds as _v1_creds  # noqa: E402, F401
from pandawms.api import v1_event as _v1_event  # noqa: E402, F401
from pandawms.api import v1_harvester as _v1_harvester  # noqa: E402, F401
from pandawms.api import v1_jedi_log as _v1_jedi_log  # noqa: E402, F401
from pandawms.api import v1_metaconfig as _v1_metaconfig  # noqa: E402, F401
from pandawms.api import v1_pbook as _v1_pbook  # noqa: E402, F401
from pandawms.api import v1_secrets as _v1_secrets  # noqa: E402, F401
from pandawms.api import v1_statistics as _v1_statistics  # noqa: E402, F401
from pandawms.api import v1_tasks as _v1_tasks  # noqa: E402, F401
from pandawms.api import v1_worker_nodes as _v1_worker_nodes  # noqa: E402, F401
