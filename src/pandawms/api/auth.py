"""Establishing who the caller is and what roles they hold.

Sources, in order: the TLS client certificate (end-entity DN of a proxy), the headers of a
trusted TLS front end (only from ``trusted_proxies`` addresses), a bearer token (verified
against ``oidc_config``; in ``open`` mode without that file its claims are read unverified so
that jobs still carry the user's name), or nothing (anonymous). Roles come from configured DN
lists and from VOMS FQANs or token groups.
"""

from __future__ import annotations

import base64
import ipaddress
import threading
import time
from collections.abc import Mapping

import orjson
from sqlalchemy import Engine, select

from pandawms.api.oidc import TokenRejected, TokenVerifier
from pandawms.config import Settings
from pandawms.db.schema import banned_users
from pandawms.model.errors import Forbidden
from pandawms.model.identity import Identity

DN_HEADER = "x-ssl-client-s-dn"
FQAN_HEADER = "x-ssl-client-fqans"


def _unverified_claims(token: str) -> dict[str, object]:
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_dn(claims: Mapping[str, object]) -> str:
    """The DN-like name PanDA gives a token user: ``/CN=Jane Doe/CN=nickname:jdoe``."""
    name = str(claims.get("name") or "").strip()
    nickname = str(claims.get("preferred_username") or "").strip()
    if name:
        return "/CN=" + name.title() + (f"/CN=nickname:{nickname}" if nickname else "")
    subject = str(claims.get("sub") or "").strip()
    return f"/CN={subject}" if subject else ""


def _dn_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class BanList:
    """The ``banned_users`` table, re-read at most every ``ttl`` seconds per process."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._names: dict[str, str] = {}
        self._read = 0.0
        self._lock = threading.Lock()

    def reason(self, name: str) -> str | None:
        """Why ``name`` is banned, or None."""
        with self._lock:
            if time.monotonic() - self._read > self.ttl:
                with self.engine.connect() as conn:
                    rows = conn.execute(select(banned_users.c.name, banned_users.c.reason))
                    self._names = {row[0]: row[1] or "banned" for row in rows}
                self._read = time.monotonic()
            return self._names.get(name)


class Authenticator:
    """Turns a request's connection facts into an :class:`Identity`."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.oidc_config) if settings.oidc_config else None
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in _dn_list(settings.trusted_proxies)]
        self.role_dns = {
            "admin": _dn_list(settings.admin_dns),
            "manager": _dn_list(settings.manager_dns),
            "production": _dn_list(settings.production_dns),
            "pilot": _dn_list(settings.pilot_dns),
        }
        self.bans = BanList(engine, settings.ban_cache_seconds) if engine is not None else None

    def _roles(self, dn: str, fqans: tuple[str, ...]) -> frozenset[str]:
        roles = {"user"}
        for role, dns in self.role_dns.items():
            if any(item in dn for item in dns):
                roles.add(role)
        for fqan in fqans:
            if "/Role=production" in fqan:
                roles.add("production")
            elif "/Role=pilot" in fqan:
                roles.add("pilot")
        if "admin" in roles:
            roles.add("manager")
        if "manager" in roles:
            roles.add("production")
        if "production" in roles:
            roles.add("pilot")
        return frozenset(roles)

    def _trusted(self, remote: str) -> bool:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def identify(
        self, headers: Mapping[str, str], remote: str, tls: Mapping[str, object] | None = None
    ) -> Identity:
        """The caller; raises TokenRejected (401) for a bad token and Forbidden (403) for a banned user."""
        who = self._identify(headers, remote, tls)
        if who.dn and self.bans is not None:
            reason = self.bans.reason(who.name)
            if reason is not None:
                raise Forbidden(f"{who.name} is banned: {reason}")
        return who

    def _identify(
        self, headers: Mapping[str, str], remote: str, tls: Mapping[str, object] | None
    ) -> Identity:
        client_dn = str((tls or {}).get("client_dn") or "")
        if client_dn:
            raw = (tls or {}).get("fqans") or ()
            fqans = tuple(str(f) for f in raw) if isinstance(raw, list | tuple) else ()
            return Identity(client_dn, fqans, self._roles(client_dn, fqans), "x509", remote)
        # DN headers come only from a front end that ended TLS itself and talks plain HTTP to
        # us: on a TLS connection (HAProxy passthrough) the client wrote them, not the balancer.
        if tls is None and self.proxies and headers.get(DN_HEADER) and self._trusted(remote):
            dn = headers[DN_HEADER].strip()
            fqans = tuple(f.strip() for f in headers.get(FQAN_HEADER, "").split(",") if f.strip())
            client = headers.get("x-forwarded-for", remote).split(",")[0].strip()
            return Identity(dn, fqans, self._roles(dn, fqans), "header", client)
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
            if self.verifier is not None:
                verified = self.verifier.verify(token, headers.get("origin"))
                dn = token_dn(verified.claims)
                fqans = tuple(
                    f"/{verified.vo}/Role={g.split('/', 1)[1]}" if "/" in g else f"/{g}"
                    for g in verified.groups
                )
                if verified.role == "pilot":
                    # A pilot's token (Origin <vo>.pilot) is for pulling and reporting jobs: it
                    # is not a user's, so it may not submit, kill or retry jobs and tasks.
                    roles = frozenset({"pilot"})
                elif verified.role == "production":
                    roles = self._roles(dn, ()) | {"production", "pilot"}
                else:
                    roles = self._roles(dn, ())
                return Identity(dn, fqans, roles, "token", remote)
            if self.settings.auth_mode == "strict":
                raise TokenRejected("this server has no token issuers configured (oidc_config)")
            claims = _unverified_claims(token)
            dn = token_dn(claims)
            groups = claims.get("groups") or claims.get("wlcg.groups") or []
            fqans = tuple("/" + str(g).strip("/") for g in groups) if isinstance(groups, list) else ()
            if dn:
                return Identity(dn, fqans, self._roles(dn, ()), "token", remote)
        return Identity(remote_host=remote)


__all__ = ["Authenticator", "BanList", "TokenRejected", "token_dn"]
