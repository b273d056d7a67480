"""``/api/v1/creds/*``: credentials for Harvester, user secrets and access tokens for pilots.

Proxies, key pairs and token keys come from the operators' credential directory
(:mod:`pandawms.core.creds.proxies`); only the production role may ask (:mod:`pandawms.api.authz`).
``set_user_secrets`` and ``get_user_secrets`` are pbook's set_secret, delete_secret,
delete_all_secrets and list_secrets (a secret is always the caller's own: the owner is the
identity of the connection, never an argument). ``get_access_token`` hands a token pilot a fresh
access token from the configured issuer. Refusals are answered in the envelope (HTTP 200,
``success: false``), as the real server does, so the clients can show them.
"""

from __future__ import annotations

from typing import Annotated

import orjson

from pandawms.api.authz import HARVESTER, PILOT, USER, USER_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.creds import access_token
from pandawms.core.creds import proxies as creds
from pandawms.core.creds import secrets as user_secrets
from pandawms.model.errors import PandaError

methods = V1Module("creds")


NAME = Param("str")


@methods.get("get_proxy", HARVESTER)
def get_proxy(ctx: RequestContext, *, role: str | None = None, dn: str | None = None) -> Result:
    """The proxy of ``dn`` (default: the caller) with ``role``.

    The reply holds it under ``user_proxy`` (the real server's key) and ``userProxy`` (the key
    Harvester's communicator reads).
    """
    try:
        pem = creds.get_proxy(ctx.rt.settings, dn or ctx.who.dn, role or None)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"user_proxy": pem, "userProxy": pem})


@methods.get("get_key_pair", HARVESTER)
def get_key_pair(
    ctx: RequestContext, *, public_key_name: Annotated[str, NAME], private_key_name: Annotated[str, NAME]
) -> Result:
    """Both halves of a key pair (object-store keys), by their names."""
    try:
        public, private = creds.get_key_pair(ctx.rt.settings, public_key_name, private_key_name)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"public_key": public, "private_key": private})


@methods.get("get_token_key", HARVESTER)
def get_token_key(ctx: RequestContext, *, client_name: Annotated[str, NAME]) -> Result:
    """The latest token key of a client (Harvester's token-key credential manager)."""
    try:
        key = creds.get_token_key(ctx.rt.settings, client_name)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"tokenKey": key})


@methods.post("set_user_secrets", USER_WRITE)
def set_user_secrets(ctx: RequestContext, *, key: str | None = None, value: str | None = None) -> Result:
    """Set one secret of the caller; no ``value`` deletes the key, no ``key`` deletes them all."""
    return True, user_secrets.set_secret(ctx.rt, ctx.who.name if ctx.who.dn else "", key, value), None


@methods.get("get_user_secrets", USER)
def get_user_secrets(
    ctx: RequestContext, *, keys: Annotated[list[str] | None, Param("str_list", None, max_items=100)]
) -> Result:
    """The caller's secrets; ``data`` is a JSON string of the object, as panda-client decodes it."""
    found = user_secrets.get_secrets(ctx.rt, ctx.who.name if ctx.who.dn else "", keys)
    return ok(orjson.dumps(found).decode())


@methods.get("get_access_token", PILOT)
def get_access_token(ctx: RequestContext, *, client_name: str, token_key: str | None = None) -> Result:
    """An access token for ``client_name`` from the configured issuer (client-credentials flow).

    ``token_key`` is accepted as pilots send it; the caller is already a pilot or production
    identity (the access rule), which is what the key would prove.
    """
    token = access_token.access_token(ctx.rt, client_name)
    return ok({"user_proxy": token})
