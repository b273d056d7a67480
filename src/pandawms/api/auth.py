"""Establishing who the caller is.

In ``open`` mode (a laptop, the test suite) every caller is trusted: a bearer token's claims
are read without checking the signature so that jobs carry the user's name, and a caller with
no credentials is ``anonymous``. ``strict`` mode, with verified certificates and tokens, builds
on the same :class:`Identity`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from pandawms.config import Settings
from pandawms.model.identity import Identity


def _unverified_claims(token: str) -> dict[str, object]:
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _token_dn(claims: Mapping[str, object]) -> str:
    name = str(claims.get("name") or "").strip()
    nickname = str(claims.get("preferred_username") or "").strip()
    if name:
        dn = "/CN=" + name.title()
        return dn + (f"/CN=nickname:{nickname}" if nickname else "")
    subject = str(claims.get("sub") or "").strip()
    return f"/CN={subject}" if subject else ""


def _roles(dn: str, settings: Settings) -> frozenset[str]:
    production = [p.strip() for p in settings.production_dns.split(",") if p.strip()]
    return frozenset({"production"}) if any(p in dn for p in production) else frozenset()


def identify(
    headers: Mapping[str, str], remote: str, settings: Settings, tls: Mapping[str, object] | None = None
) -> Identity:
    """The caller's identity from the TLS client certificate, a token, or nothing."""
    client_dn = str((tls or {}).get("client_dn") or "")
    if client_dn:
        return Identity(dn=client_dn, roles=_roles(client_dn, settings), method="x509", remote_host=remote)
    auth = headers.get("authorization", "")
    if settings.auth_mode == "open" and auth.lower().startswith("bearer "):
        claims = _unverified_claims(auth[7:].strip())
        dn = _token_dn(claims)
        groups = claims.get("groups") or claims.get("wlcg.groups") or []
        fqans = (
            tuple(str(g) if str(g).startswith("/") else "/" + str(g) for g in groups)
            if isinstance(groups, list)
            else ()
        )
        if dn:
            return Identity(dn=dn, fqans=fqans, method="token", remote_host=remote)
    return Identity(remote_host=remote)
