"""``/api/v1/async_process/*``: requests operators send to the server machines, and their results.

``submit_grep_request`` greps one of the server's log files on the machines of a service (or on
one machine), ``submit_sleep_echo_request`` is a probe any one machine of a service answers, and
``get_result`` polls either. The machines' daemons run them
(:mod:`pandawms.core.ops.async_processor`).
"""

from __future__ import annotations

from pandawms.api.authz import PRODUCTION_WRITE, SECURE, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.ops import async_requests as requests
from pandawms.model.errors import Forbidden

methods = V1Module("async_process")

#: Longest sleep of a sleep-and-echo probe, seconds.
MAX_SLEEP_SECONDS = 60
#: Longest echoed message, characters.
MAX_MESSAGE_LENGTH = 100
#: Longest grep pattern, characters.
MAX_PATTERN_LENGTH = 1000


def _allowed(ctx: RequestContext) -> bool:
    names = {n.strip() for n in ctx.rt.settings.async_request_users.split(",") if n.strip()}
    return ctx.who.name in names


@methods.post("submit_grep_request", USER_WRITE)
def submit_grep_request(
    ctx: RequestContext,
    *,
    pattern: str,
    log_filename: str,
    service_name: str | None = None,
    machine_name: str | None = None,
) -> Result:
    """Grep ``log_filename`` (a ``panda-*.log`` or ``panda-*.gz`` in the log directory) on the
    machines of ``service_name`` or on ``machine_name``; data is ``{"request_id"}``.

    Only secure callers listed in ``async_request_users`` may, and only the requester reads the
    results.
    """
    if not _allowed(ctx):
        raise Forbidden(f"'{ctx.who.name}' is not authorized")
    if bool(service_name) == bool(machine_name):
        return False, "exactly one of service_name or machine_name must be provided", None
    if "/" in log_filename or "\\" in log_filename or ".." in log_filename:
        return False, "invalid log_filename: must not contain path separators", None
    if not (log_filename.startswith("panda-") and log_filename.endswith((".log", ".gz"))):
        return False, "invalid log_filename: must start with 'panda-' and end with '.log' or '.gz'", None
    if len(log_filename) > 255 or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        return (
            False,
            f"invalid pattern or log_filename: pattern of 1 to {MAX_PATTERN_LENGTH} characters",
            None,
        )
    if service_name:
        expected = requests.alive_machines(ctx.rt, service_name[:64])
        if not expected:
            return False, f"no alive machines found for service '{service_name[:64]}'", None
        machine = None
    else:
        assert machine_name is not None
        if len(machine_name) > 255 or machine_name == requests.ANY_MACHINE:
            return False, "invalid machine_name", None
        expected, machine = [machine_name], machine_name
    request_id = requests.submit(
        ctx.rt,
        ctx.who,
        "grep",
        {"pattern": pattern, "log_filename": log_filename},
        service_name[:64] if service_name else None,
        machine,
        expected,
    )
    return ok({"request_id": request_id})


@methods.post("submit_sleep_echo_request", PRODUCTION_WRITE)
def submit_sleep_echo_request(
    ctx: RequestContext, *, service_name: str, message: str, seconds: int = 10
) -> Result:
    """A probe: any one alive machine of ``service_name`` sleeps ``seconds`` and echoes ``message``.

    Production only; its result is readable by the requester and by production.
    """
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        return False, f"invalid seconds: must be between 0 and {MAX_SLEEP_SECONDS}", None
    if len(message) > MAX_MESSAGE_LENGTH:
        return False, f"invalid message: must be at most {MAX_MESSAGE_LENGTH} characters", None
    if not service_name:
        return False, "service_name must be provided", None
    service = service_name[:64]
    if not requests.alive_machines(ctx.rt, service):
        return False, f"no alive machines found for service '{service}'", None
    request_id = requests.submit(
        ctx.rt,
        ctx.who,
        "sleep_echo",
        {"seconds": seconds, "message": message},
        service,
        requests.ANY_MACHINE,
        [requests.ANY_MACHINE],
        access="production",
    )
    return ok({"request_id": request_id})


@methods.get("get_result", SECURE)
def get_result(ctx: RequestContext, *, request_id: str) -> Result:
    """``{"overall_status": "complete"|"pending", "expected_machines", "results"}`` of a request.

    Any secure caller; who may read is the request's access level (core/ops/async_requests.py).
    """
    return ok(requests.result(ctx.rt, ctx.who, request_id))
