"""v1 ``creds/*`` methods of users and token pilots: user secrets and access tokens.

``creds/set_user_secrets`` and ``creds/get_user_secrets`` are pbook's set_secret,
delete_secret, delete_all_secrets and list_secrets (a secret is always the caller's own: the
owner is the identity of the connection, never an argument). ``creds/get_access_token`` hands
a token pilot a fresh access token from the configured issuer. Refusals are answered in the
envelope (HTTP 200, ``success: false``), as the real server does, so pbook can show them.
"""

from __future__ import annotations

import orjson

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.creds import access_token
from pandawms.core.creds import secrets as user_secrets


@v1("creds", "set_user_secrets", "POST", key=Param("str", None), value=Param("str", None))
def set_user_secrets(ctx: RequestContext, key: str | None, value: str | None) -> Result:
    """Set one secret of the caller; no ``value`` deletes the key, no ``key`` deletes them all."""
    return True, user_secrets.set_secret(ctx.rt, ctx.who.name if ctx.who.dn else "", key, value), None


@v1("creds", "get_user_secrets", "GET", keys=Param("str_list", None, max_items=100))
def get_user_secrets(ctx: RequestContext, keys: list[str] | None) -> Result:
    """The caller's secrets; ``data`` is a JSON string of the object, as panda-client decodes it."""
    found = user_secrets.get_secrets(ctx.rt, ctx.who.name if ctx.who.dn else "", keys)
    return ok(orjson.dumps(found).decode())


@v1("creds", "get_access_token", "GET", client_name=Param("str"), token_key=Param("str", None))
def get_access_token(ctx: RequestContext, client_name: str, token_key: str | None) -> Result:
    """An access token for ``client_name`` from the configured issuer (client-credentials flow).

    ``token_key`` is accepted as pilots send it; the caller is already a pilot or production
    identity (the access rule), which is what the key would prove.
    """
    token = access_token.access_token(ctx.rt.settings, client_name)
    return ok({"user_proxy": token})
