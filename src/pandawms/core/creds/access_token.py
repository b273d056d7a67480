"""Access tokens for token pilots: the client-credentials flow against a configured issuer.

A pilot that runs with a token renews it through the server (creds/get_access_token, or the
legacy ``get_access_token`` call of pilot 3.11 with ``client_name=pilot_server``). The server
asks its token issuer for an access token with its own client id and secret and hands the
token on; a token is reused until a minute before it expires, so a fleet of pilots does not
make one issuer request each.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import orjson

from pandawms.config import Settings
from pandawms.core.runtime import Runtime
from pandawms.model.errors import PandaError

log = logging.getLogger("pandawms.access_token")

#: Seconds to wait for the issuer.
ISSUER_TIMEOUT = 30
#: A cached token is renewed this many seconds before it expires.
RENEW_MARGIN = 60
#: Largest issuer answer read (a token response is a few kB).
MAX_RESPONSE_BYTES = 1024 * 1024


class TokenRefused(PandaError):
    """No token can be issued: not configured, unknown client, or the issuer said no."""


@dataclass
class _Cached:
    token: str
    expires: float


def _settings_ok(settings: Settings) -> None:
    missing = [
        name
        for name, value in (
            ("PANDA_TOKEN_ENDPOINT", settings.token_endpoint),
            ("PANDA_TOKEN_CLIENT_ID", settings.token_client_id),
            ("PANDA_TOKEN_CLIENT_SECRET (or PANDA_TOKEN_CLIENT_SECRET_FILE)", settings.token_client_secret),
        )
        if not value
    ]
    if missing:
        raise TokenRefused(f"no token issuer configured: set {', '.join(missing)}")


def access_token(rt: Runtime, client_name: str | None) -> str:
    """An access token for ``client_name`` (the configured ``token_client_name``).

    The token is kept by the runtime until :data:`RENEW_MARGIN` seconds before it expires.
    """
    settings = rt.settings
    _settings_ok(settings)
    if client_name and client_name != settings.token_client_name:
        raise TokenRefused(
            f"'token' not found for {client_name[:100]}: this server issues tokens only for "
            f"client_name={settings.token_client_name} (PANDA_TOKEN_CLIENT_NAME)"
        )
    cache_key = ("access_token", settings.token_endpoint, settings.token_client_id, settings.token_scope)
    now = time.monotonic()
    cached = rt.remembered(cache_key, math.inf)
    if isinstance(cached, _Cached) and cached.expires - RENEW_MARGIN > now:
        return cached.token
    token, lifetime = _request(settings)
    rt.remember(cache_key, _Cached(token, now + lifetime))
    return token


def _request(settings: Settings) -> tuple[str, float]:
    form = {
        "grant_type": "client_credentials",
        "client_id": settings.token_client_id,
        "client_secret": settings.token_client_secret,
    }
    if settings.token_scope:
        form["scope"] = settings.token_scope
    request = urllib.request.Request(
        settings.token_endpoint,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ISSUER_TIMEOUT) as response:  # noqa: S310
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        log.warning("token issuer %s refused: HTTP %s", settings.token_endpoint, exc.code)
        raise TokenRefused(f"the token issuer refused the request (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        log.warning("token issuer %s unreachable: %s", settings.token_endpoint, exc)
        raise TokenRefused("the token issuer cannot be reached; try again later") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise TokenRefused("the token issuer's answer is too large")
    try:
        answer = orjson.loads(body)
        token = answer["access_token"]
    except (ValueError, KeyError, TypeError):
        raise TokenRefused("the token issuer's answer holds no access_token") from None
    if not isinstance(token, str) or not token:
        raise TokenRefused("the token issuer's answer holds no access_token")
    expires_in = answer.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 0.0
    return token, lifetime
