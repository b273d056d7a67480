"""``/api/v1/job/*``: submission, descriptions, status, kill and the commands on single jobs.

panda-client submits and reads jobs here; pbook sets the debug mode and reads the job reports
of a task; operators reassign jobs, give a pilot a command or ask for an offline script.
"""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import PRODUCTION_WRITE, USER, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.jobspec_codec import decode_state_list, encode_job
from pandawms.api.params import Param
from pandawms.api.v1.common import IDS, STATUS_TIMEOUT
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.jobs import debug_mode, kill, submit
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.commands import reassign_jobs, set_command
from pandawms.core.jobs.offline_script import offline_script
from pandawms.core.tasks import requests as task_requests

methods = V1Module("job")


def _submitted_jobs(kwargs: dict[str, Any], data: Any) -> dict[str, Any]:
    """A submission's audit targets: the PandaIDs it created (``[[PandaID, ...], ...]``)."""
    if not isinstance(data, list):
        return kwargs
    return {"job_ids": [item[0] for item in data if isinstance(item, list) and item]}


@methods.post("submit", USER_WRITE, submission=True, targets=_submitted_jobs)
def job_submit(ctx: RequestContext, *, jobs: Annotated[Any, Param("json")]) -> Result:
    """Submit jobs sent as panda-client's JSON state list (itself a JSON string)."""
    decoded = decode_state_list(jobs)
    return ok(submit.submit_jobs(ctx.rt, decoded, ctx.who))


@methods.get_or_post("get_description", USER)
def job_get_description(ctx: RequestContext, *, job_ids: Annotated[list[int], IDS]) -> Result:
    """Full descriptions of live jobs (null for unknown IDs)."""
    found = jobs_read.get_descriptions(ctx.rt, job_ids, include_archive=False)
    return ok([encode_job(j) if j else None for j in found])


@methods.get_or_post("get_description_incl_archive", USER)
def job_get_description_incl_archive(ctx: RequestContext, *, job_ids: Annotated[list[int], IDS]) -> Result:
    """Full descriptions including archived jobs."""
    found = jobs_read.get_descriptions(ctx.rt, job_ids, include_archive=True)
    return ok([encode_job(j) if j else None for j in found])


@methods.post("kill", USER_WRITE)
def job_kill(
    ctx: RequestContext,
    *,
    job_ids: Annotated[list[int], IDS],
    code: int | None = None,
    use_email_as_id: bool = False,
    kill_options: Annotated[list[str], Param("str_list", [])],
) -> Result:
    """Kill jobs; one boolean per ID."""
    return ok(kill.kill_jobs(ctx.rt, job_ids, ctx.who, code))


@methods.get("get_status", USER)
def job_get_status(
    ctx: RequestContext, *, job_ids: Annotated[list[int], IDS], timeout: Annotated[int, STATUS_TIMEOUT]
) -> Result:
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


@methods.post("reassign", USER_WRITE)
def job_reassign(
    ctx: RequestContext, *, job_ids: Annotated[list[int], IDS], site: str | None = None
) -> Result:
    """Jobs no pilot holds yet go back to brokerage (or to the queue ``site``)."""

    if site is not None and not 0 < len(site) <= 128:
        return False, "site must be 1 to 128 characters", None
    done = reassign_jobs(ctx.rt, job_ids, ctx.who, site)
    return ok(None, f"{sum(done)} of {len(done)} jobs reassigned")


@methods.post("set_command", PRODUCTION_WRITE)
def job_set_command(ctx: RequestContext, *, job_id: int, command: str) -> Result:
    """A command for the job's pilot, given in the answer to its next heartbeat."""

    success, message = set_command(ctx.rt, job_id, command)
    return success, message, None


@methods.get("generate_offline_execution_script", USER)
def job_generate_offline_execution_script(
    ctx: RequestContext, *, job_id: int, days: int | None = None
) -> Result:
    """A shell script that runs the job again outside PanDA; ``data`` is ``{"script": ...}``."""

    (job,) = jobs_read.get_descriptions(ctx.rt, [job_id], include_archive=True)
    if job is None:
        return False, f"ERROR: Cannot get PandaID={job_id} in DB", None
    script = offline_script(job)
    if script.startswith("ERROR"):
        return False, script, None
    return ok({"script": script})


@methods.post("set_debug_mode", USER_WRITE)
def job_set_debug_mode(ctx: RequestContext, *, job_id: int, mode: bool) -> Result:
    """Turn the debug mode of a job on or off (pbook debug): its pilot then streams stdout.

    ``data`` repeats the message: panda-client shows ``data`` of a successful call.
    """
    privileged = ctx.rt.settings.auth_mode == "open" or ctx.who.is_production or "manager" in ctx.who.roles
    success, message = debug_mode.set_debug_mode(ctx.rt, job_id, mode, ctx.who, privileged)
    return success, message, message


@methods.get("get_metadata_for_analysis_jobs", USER)
def job_get_metadata_for_analysis_jobs(ctx: RequestContext, *, task_id: int) -> Result:
    """Job reports of the task's finished user jobs, by PandaID (pbook get_user_job_metadata)."""
    return task_requests.user_job_metadata(ctx.rt, task_id, ctx.who)
