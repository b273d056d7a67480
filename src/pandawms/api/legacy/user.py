"""Legacy ``/server/panda`` calls of pilot 3.11 and panda-client beyond the job cycle.

* ``setDebugMode`` (pilot, when its queue's catchall says ``setdebugmode``): plain-text answer,
  ``Succeeded`` or the reason.
* ``get_user_secrets`` (pilot, for its message-broker credentials): JSON ``[true, {...}]``.
* ``get_access_token`` (token pilot renewing its token): JSON ``StatusCode``/``userProxy``.
* ``relay_idds_command`` / ``execute_idds_workflow_command`` (pbook's workflow commands): JSON
  ``[false, reason]``, as panda-client decodes the real server's answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from pandawms.api.authz import PILOT, PILOT_WRITE, SECRETS_OWNER, USER
from pandawms.api.context import RequestContext
from pandawms.api.legacy.registry import LegacyCalls, Reply
from pandawms.api.v1.common import no_idds_message
from pandawms.core.creds import access_token
from pandawms.core.creds import secrets as user_secrets
from pandawms.core.jobs import debug_mode
from pandawms.model.errors import PandaError, StatusCode

calls = LegacyCalls()


def _int(params: dict[str, Any], name: str) -> int:
    raw = params.get(name)
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise PandaError(f"{name} must be an integer, got {str(raw)[:40]!r}") from None
    if not 0 <= value < 2**63:
        raise PandaError(f"{name} is out of range")
    return value


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


@calls.method("setDebugMode", PILOT_WRITE)
def set_debug_mode(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Turn a job's debug mode on or off; pilots and production identities act on any job."""
    panda_id = _int(params, "pandaID")
    privileged = ctx.rt.settings.auth_mode == "open" or ctx.who.is_pilot
    _, message = debug_mode.set_debug_mode(ctx.rt, panda_id, _true(params.get("modeOn")), ctx.who, privileged)
    return Reply(message, "text")


@calls.method("get_user_secrets", SECRETS_OWNER)
def get_user_secrets(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """The caller's own secrets (``keys``: comma-separated names); ``get_json`` as the pilot asks."""
    keys_text = params.get("keys")
    keys = [k for k in str(keys_text).split(",") if k] if keys_text not in (None, "", "None") else None
    if keys is not None and len(keys) > 100:
        raise PandaError("at most 100 keys")
    try:
        found = user_secrets.get_secrets(ctx.rt, ctx.who.name if ctx.who.dn else "", keys)
    except PandaError as exc:
        return Reply([False, exc.message], "json")
    if _true(params.get("get_json")):
        return Reply([True, found], "json")
    return Reply([True, orjson.dumps(found).decode()], "json")


@calls.method("get_access_token", PILOT)
def get_access_token(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """A fresh access token for the pilot (``client_name``, ``token_key`` as pilot 3.11 sends them)."""
    client_name = params.get("client_name")
    try:
        token = access_token.access_token(ctx.rt, str(client_name) if client_name else None)
    except PandaError as exc:
        return Reply({"StatusCode": int(StatusCode.PROXY_ERROR), "errorDialog": exc.message}, "json")
    return Reply({"StatusCode": int(StatusCode.SUCCESS), "userProxy": token}, "json")


@calls.method("relay_idds_command", USER)
def relay_idds_command(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Refused: there is no iDDS behind this server."""
    return Reply([False, no_idds_message(ctx)], "json")


@calls.method("execute_idds_workflow_command", USER)
def execute_idds_workflow_command(ctx: RequestContext, params: dict[str, Any]) -> Reply:
    """Refused: there is no iDDS behind this server (pbook show_workflow, kill_workflow, ...)."""
    return Reply([False, no_idds_message(ctx)], "json")
