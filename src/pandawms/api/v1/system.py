"""``/api/v1/system/*``: liveness and the caller as the server sees it."""

from __future__ import annotations

from typing import Annotated, Any

from pandawms.api.authz import ANYONE, SECURE
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.model.identity import Identity, clean_user_id, owner_dn
from pandawms.model.working_groups import primary_working_group, production_working_groups

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
    env = _environment(ctx)
    echoed = {key: str(value)[:1000] for key, value in sorted(parameters.items())}
    return ok({"parameters": echoed, "environment": env})


def _grst_credentials(who: Identity) -> dict[str, str]:
    """The caller's credentials as gridsite's ``GRST_CRED_<n>`` variables (DN first, then FQANs)."""
    creds: dict[str, str] = {}
    if who.dn:
        creds["GRST_CRED_0"] = f"X509USER 0 0 0 {who.dn}"
    for index, fqan in enumerate(who.fqans, start=1):
        creds[f"GRST_CRED_{index}"] = f"VOMS 0 0 0 {fqan}"
    return creds


def _environment(ctx: RequestContext) -> dict[str, Any]:
    who = ctx.who
    env: dict[str, Any] = {
        "SSL_CLIENT_S_DN": who.dn or None,
        "PANDA_USER_NAME": who.name,
        "PANDA_AUTH_METHOD": who.method,
        "PANDA_PRODUCTION_ROLE": who.is_production,
        "REMOTE_ADDR": who.remote_host,
        "HTTPS": "on" if ctx.secure else "off",
    }
    env.update(_grst_credentials(who))
    return env


@methods.get("get_voms_attributes", SECURE)
async def get_voms_attributes(ctx: RequestContext) -> Result:
    """The caller's ``GRST_CRED_*`` credentials: ``KEY : value`` lines as the message, the dict as data."""
    creds = _grst_credentials(ctx.who)
    text = "\n".join(f"{key} : {value}" for key, value in sorted(creds.items()))
    return ok(creds, text)


@methods.get("get_user_attributes", SECURE)
async def get_user_attributes(ctx: RequestContext) -> Result:
    """How the server sees the caller: DN forms, FQANs, production role and working groups.

    For debugging a credential. The e-mail address line is there as on the real server, which
    asks the data-management system for it; pandawms keeps no address book, so it is ``None``.
    """
    who = ctx.who
    fqans = list(who.fqans)
    groups = production_working_groups(fqans, ctx.rt.settings.vo)
    primary = primary_working_group(fqans)
    clean = clean_user_id(who.dn)
    text = (
        f"User DN (raw): {who.dn}\nUser DN (bare): {owner_dn(who.dn)}\nUser DN (clean): {clean}\n"
        f"Email address: None\n"
        f"FQANs: {fqans}\nProduction user: {who.is_production}\n"
        f"Production working groups: {groups}\nPrimary production working group: {primary}\n"
    )
    data = {
        "user_dn_raw": who.dn,
        "user_dn_clean": clean,
        "fqans": fqans,
        "is_production_user": who.is_production,
        "production_working_groups": groups,
        "primary_working_group": primary,
    }
    return ok(data, text)
