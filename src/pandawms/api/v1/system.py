"""``/api/v1/system/*``: liveness and the caller as the server sees it."""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import ANYONE
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok

methods = V1Module("system")


@methods.get("is_alive", ANYONE)
async def is_alive(ctx: RequestContext) -> Result:
    """Liveness for panda-client's hello and Harvester's check (on the event loop: no database)."""
    return ok()


@methods.get("get_attributes", ANYONE)
async def get_attributes(
    ctx: RequestContext, *, parameters: Annotated[dict[str, Any], Param("extra", max_items=100)]
) -> Result:
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
