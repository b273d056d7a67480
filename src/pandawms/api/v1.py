"""The v1 API: ``/api/v1/<module>/<method>``, JSON in, ``{"success","message","data"}`` out.

Methods are registered with their HTTP verb and declared parameters; the app checks both
before calling the handler, which returns ``(success, message, data)`` or raises PandaError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pandawms.api.context import RequestContext
from pandawms.api.jobspec_codec import decode_state_list, encode_job
from pandawms.api.params import Param
from pandawms.api.pilot_codec import job_for_pilot, parse_update, v1_to_legacy
from pandawms.core import dispatch, heartbeat, jobs_read, kill, submit
from pandawms.core.jobs_read import MAX_IDS_PER_READ
from pandawms.model.errors import PandaError, StatusCode

log = logging.getLogger("pandawms.api.v1")

Result = tuple[bool, str, Any]
Handler = Callable[..., Result]


@dataclass(frozen=True)
class Method:
    """A registered v1 method."""

    module: str
    name: str
    verb: str
    params: dict[str, Param]
    handler: Handler


METHODS: dict[tuple[str, str], Method] = {}


def v1(module: str, name: str, verb: str, **params: Param) -> Callable[[Handler], Handler]:
    """Register a handler as ``/api/v1/<module>/<name>``."""

    def register(func: Handler) -> Handler:
        METHODS[(module, name)] = Method(module, name, verb, params, func)
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


@v1("system", "get_attributes", "GET")
def get_attributes(ctx: RequestContext) -> Result:
    """The caller as the server sees it, in the gridsite variables panda-client's get_cert_attributes reads."""
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
    return ok({"environment": env})


@v1("metaconfig", "get_site_specs", "GET", type=Param("str", None))
def get_site_specs(ctx: RequestContext, type: str | None) -> Result:
    """Queue definitions by name, optionally of one type (production, analysis, unified)."""
    from pandawms.core.queues import all_documents

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


@v1("job", "get_description", "POST", job_ids=IDS)
def job_get_description(ctx: RequestContext, job_ids: list[int]) -> Result:
    """Full descriptions of live jobs (null for unknown IDs)."""
    found = jobs_read.get_descriptions(ctx.rt, job_ids, include_archive=False)
    return ok([encode_job(j) if j else None for j in found])


@v1("job", "get_description_incl_archive", "POST", job_ids=IDS)
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


@v1("job", "get_status", "GET", job_ids=IDS)
def job_get_status(ctx: RequestContext, job_ids: list[int]) -> Result:
    """Status and pending command per job (Harvester's check_jobs)."""
    found = jobs_read.get_statuses(ctx.rt, job_ids)
    out = []
    for panda_id in job_ids:
        row = found.get(panda_id)
        if row is None:
            out.append({"status": "unknown", "command": "tobekilled"})
        else:
            out.append({"status": row["jobStatus"], "command": row["commandToPilot"] or "NULL"})
    return ok(out)


@v1("job", "reassign", "POST", job_ids=IDS, site=Param("str", None))
def job_reassign(ctx: RequestContext, job_ids: list[int], site: str | None) -> Result:
    """Jobs no pilot holds yet go back to brokerage (or to the queue ``site``)."""
    from pandawms.core.job_commands import reassign_jobs

    if site is not None and not 0 < len(site) <= 128:
        return False, "site must be 1 to 128 characters", None
    done = reassign_jobs(ctx.rt, job_ids, ctx.who, site)
    return ok(None, f"{sum(done)} of {len(done)} jobs reassigned")


@v1("job", "set_command", "POST", job_id=Param("int"), command=Param("str"))
def job_set_command(ctx: RequestContext, job_id: int, command: str) -> Result:
    """A command for the job's pilot, given in the answer to its next heartbeat."""
    from pandawms.core.job_commands import set_command

    success, message = set_command(ctx.rt, job_id, command)
    return success, message, None


@v1("job", "generate_offline_execution_script", "GET", job_id=Param("int"), days=Param("int", None))
def job_generate_offline_execution_script(ctx: RequestContext, job_id: int, days: int | None) -> Result:
    """A shell script that runs the job again outside PanDA; ``data`` is ``{"script": ...}``."""
    from pandawms.core.offline_script import offline_script

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
def pilot_acquire_jobs(ctx: RequestContext, **kw: Any) -> Result:
    """Dispatch jobs to a pilot or Harvester: always the bulk form."""
    if kw["harvester_id"] is not None:
        from pandawms.core.workers import check_harvester_id

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
    found = dispatch.acquire_jobs(ctx.rt, req, ctx.who)
    if not found:
        return False, "No jobs in PanDA", None
    if kw["harvester_id"] and kw["worker_id"] is not None:
        from pandawms.core.workers import link_dispatched

        link_dispatched(ctx.rt, kw["harvester_id"], kw["worker_id"], req.site, [j["PandaID"] for j in found])
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


def _update_one(ctx: RequestContext, params: dict[str, Any]) -> Result:
    legacy = v1_to_legacy({k: v for k, v in params.items() if v is not None})
    try:
        upd = parse_update(legacy)
    except PandaError as exc:
        return False, exc.message, {"StatusCode": int(StatusCode.INVALID)}
    if upd.state not in heartbeat.PILOT_REPORTABLE:
        return False, f"invalid job_status {upd.state!r}", {"StatusCode": int(StatusCode.INVALID)}
    result = heartbeat.update_job(ctx.rt, upd)
    return ok({"StatusCode": int(result.status_code), "command": result.command})


@v1("pilot", "update_job", "POST", job_id=Param("int"), job_status=Param("str"), **_UPDATE_PARAMS)
def pilot_update_job(ctx: RequestContext, **kw: Any) -> Result:
    """One heartbeat or state change."""
    return _update_one(ctx, kw)


@v1(
    "pilot",
    "update_jobs_bulk",
    "POST",
    job_list=Param("json", max_items=1000),
    harvester_id=Param("str", None),
)
def pilot_update_jobs_bulk(ctx: RequestContext, job_list: Any, harvester_id: str | None) -> Result:
    """Several updates; one v1 envelope per job, in order."""
    if not isinstance(job_list, list):
        raise PandaError("Argument error: job_list must be a list of objects")
    if len(job_list) > 1000:
        raise PandaError("Argument error: job_list has more than 1000 entries", http_status=413)
    out = []
    for index, item in enumerate(job_list):
        if not isinstance(item, dict):
            out.append({"success": False, "message": f"entry {index} is not an object", "data": None})
            continue
        try:
            success, message, data = _update_one(ctx, item)
        except PandaError as exc:
            success, message, data = False, exc.message, {"StatusCode": exc.code}
        out.append({"success": success, "message": message, "data": data})
    return ok(out)


@v1("pilot", "get_job_status", "GET", job_ids=IDS)
def pilot_get_job_status(ctx: RequestContext, job_ids: list[int]) -> Result:
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
from pandawms.api import v1_harvester as _v1_harvester  # noqa: E402, F401
from pandawms.api import v1_tasks as _v1_tasks  # noqa: E402, F401
