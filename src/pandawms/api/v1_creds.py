"""The v1 ``creds/*`` methods Harvester's credential managers call: proxies, key pairs, token keys.

Files come from the operators' credential directory (:mod:`pandawms.core.creds.proxies`); only the
production role may ask (:mod:`pandawms.api.authz`). A credential that is not there is a
refusal in the envelope (``success`` false, HTTP 200), as the real server answers.
"""

from __future__ import annotations

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.creds import proxies as creds
from pandawms.model.errors import PandaError

NAME = Param("str")


@v1("creds", "get_proxy", "GET", role=Param("str", None), dn=Param("str", None))
def get_proxy(ctx: RequestContext, role: str | None, dn: str | None) -> Result:
    """The proxy of ``dn`` (default: the caller) with ``role``.

    The reply holds it under ``user_proxy`` (the real server's key) and ``userProxy`` (the key
    Harvester's communicator reads).
    """
    try:
        pem = creds.get_proxy(ctx.rt.settings, dn or ctx.who.dn, role or None)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"user_proxy": pem, "userProxy": pem})


@v1("creds", "get_key_pair", "GET", public_key_name=NAME, private_key_name=NAME)
def get_key_pair(ctx: RequestContext, public_key_name: str, private_key_name: str) -> Result:
    """Both halves of a key pair (object-store keys), by their names."""
    try:
        public, private = creds.get_key_pair(ctx.rt.settings, public_key_name, private_key_name)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"public_key": public, "private_key": private})


@v1("creds", "get_token_key", "GET", client_name=NAME)
def get_token_key(ctx: RequestContext, client_name: str) -> Result:
    """The latest token key of a client (Harvester's token-key credential manager)."""
    try:
        key = creds.get_token_key(ctx.rt.settings, client_name)
    except PandaError as exc:
        return False, exc.message, None
    return ok({"tokenKey": key})
