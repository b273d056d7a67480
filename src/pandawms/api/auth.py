"""Establishing who the caller is and what roles they hold.

Sources, in order: the TLS client certificate (end-entity DN of a proxy), the headers of a
trusted TLS front end (only when the connection's own peer address is in ``trusted_proxies``:
no header can make a client look like a front end), a bearer token (verified against
``oidc_config``; in ``open`` mode without that file its claims are read unverified so that jobs
still carry the user's name), or nothing (anonymous).

Roles come from whole values only: a configured DN list entry equal to the caller's DN (proxy
CNs removed), a VOMS FQAN ``/<vo>/Role=<role>`` of the server's VO (``vo`` setting), or a
token whose Origin asks for ``<vo>.<role>`` and whose groups hold ``<vo>/<role>`` exactly. A
pilot credential without the production role is a pilot only: it holds no "user" role, so it
can pull and report jobs but not submit, kill or retry anything.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Mapping

import orjson
from sqlalchemy import Engine, select

from pandawms.api.oidc import TokenRejected, TokenVerifier
from pandawms.config import Settings
from pandawms.db.schema import banned_users
from pandawms.model.errors import Forbidden, PandaError
from pandawms.model.identity import Identity, owner_dn

log = logging.getLogger("pandawms.auth")

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


_DN_ESCAPES = {"%": "%25", "/": "%2F", "=": "%3D", ",": "%2C"}


def _dn_value(text: str) -> str:
    """``text`` safe inside one slash-DN component: ``/``, ``=``, ``,`` and ``%`` escaped.

    A claim can then neither add DN components (``name: "x/CN=Pilot"``) nor make two different
    claims look alike.
    """
    return "".join(_DN_ESCAPES.get(char, char) for char in text)


def token_dn(claims: Mapping[str, object]) -> str:
    """The DN a token user gets: ``/O=<issuer>/OU=<sub>/CN=Jane Doe/CN=nickname:jdoe``.

    The issuer and subject are what make a token identity unique, so they are part of it: two
    people whose name claims agree are still two owners. The O and OU parts are dropped by the
    compact name rules, so ``prodUserName`` stays the display name (``Jane Doe``) PanDA shows.
    """
    issuer = str(claims.get("iss") or "").strip()
    subject = str(claims.get("sub") or "").strip()
    name = str(claims.get("name") or "").strip()
    nickname = str(claims.get("preferred_username") or "").strip()
    if not subject:
        return ""
    prefix = (f"/O={_dn_value(issuer)}" if issuer else "") + f"/OU={_dn_value(subject)}"
    if name:
        return (
            prefix
            + "/CN="
            + _dn_value(name.title())
            + (f"/CN=nickname:{_dn_value(nickname)}" if nickname else "")
        )
    return prefix + f"/CN={_dn_value(subject)}"


#: ``/<vo>/Role=<role>`` or ``/<vo>/usatlas/Role=<role>`` (ATLAS's US production group),
#: optionally with ``/Capability=NULL``; nothing else grants a role.
_ROLE_FQAN = re.compile(r"^/(?P<vo>[^/]+)(?:/usatlas)?/Role=(?P<role>[^/]+)(?:/Capability=NULL)?$")


def fqan_role(fqan: str, vo: str) -> str | None:
    """The role a VOMS FQAN grants in ``vo``, compared whole; None for other VOs or groups."""
    match = _ROLE_FQAN.match(fqan.strip())
    if match is None or match.group("vo") != vo:
        return None
    return match.group("role")


def _dn_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class BanList:
    """The ``banned_users`` table, re-read at most every ``ttl`` seconds per process.

    :meth:`reason` runs on the event loop, so it never reads the table itself: a stale copy is
    refreshed by a background thread (one at a time) while the previous copy keeps answering.
    Only before the first successful read is there no answer: then the caller gets a 503 (the
    database is not answering) rather than a pass it should not have.
    """

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._names: dict[str, str] | None = None
        self._read = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    def load(self) -> None:
        """Read the table now (in a thread, or at start before serving)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(banned_users.c.name, banned_users.c.reason))
            names = {row[0]: row[1] or "banned" for row in rows}
        self._names = names
        self._read = time.monotonic()

    def _refresh(self) -> None:
        try:
            self.load()
        except Exception as exc:  # noqa: BLE001 - keep the last copy; the next request retries
            log.warning("cannot read the ban list: %s", exc)
        finally:
            with self._lock:
                self._refreshing = False

    def reason(self, name: str) -> str | None:
        """Why ``name`` is banned, or None; raises a 503 PandaError before the list was ever read."""
        if time.monotonic() - self._read > self.ttl:
            with self._lock:
                start = not self._refreshing
                self._refreshing = True
            if start:
                threading.Thread(target=self._refresh, name="pandawms-banlist", daemon=True).start()
        names = self._names
        if names is None:
            raise PandaError("the ban list cannot be read now (database not answering); retry later", 503)
        return names.get(name)


class Authenticator:
    """Turns a request's connection facts into an :class:`Identity`."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.oidc_config) if settings.oidc_config else None
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in _dn_list(settings.trusted_proxies)]
        self.role_dns = {
            role: frozenset(owner_dn(dn) for dn in _dn_list(value))
            for role, value in (
                ("admin", settings.admin_dns),
                ("manager", settings.manager_dns),
                ("production", settings.production_dns),
                ("pilot", settings.pilot_dns),
            )
        }
        self.bans = BanList(engine, settings.ban_cache_seconds) if engine is not None else None

    def _roles(
        self, dn: str, fqans: tuple[str, ...], token_role: str | None = None, token: bool = False
    ) -> frozenset[str]:
        # A token user may be listed by the whole DN or by its issuer and subject alone
        # (/O=<issuer>/OU=<sub>), which stay the same when the name claims change.
        keys = {owner_dn(dn), dn.split("/CN=", 1)[0] if token else ""} - {""}
        roles = {"user"}
        for role, dns in self.role_dns.items():
            if keys & dns:
                roles.add(role)
        for fqan in fqans:
            granted = fqan_role(fqan, self.settings.vo)
            if granted in ("production", "pilot"):
                roles.add(granted)
        if token_role == "pilot":
            # A pilot's token (Origin <vo>.pilot) pulls and reports jobs, whoever it names.
            return frozenset({"pilot"})
        if token_role == "production":
            roles.add("production")
        if "admin" in roles:
            roles.add("manager")
        if "manager" in roles:
            roles.add("production")
        if "production" in roles:
            roles.add("pilot")
        elif "pilot" in roles:
            # A pilot credential runs other people's jobs on worker nodes: it is not a user.
            return frozenset({"pilot"})
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
            # The front end appends the address it saw; anything before it the client wrote.
            client = headers.get("x-forwarded-for", remote).split(",")[-1].strip() or remote
            return Identity(dn, fqans, self._roles(dn, fqans), "header", client)
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
            if self.verifier is not None:
                verified = self.verifier.verify(token, headers.get("origin"))
                dn = token_dn(verified.claims)
                if not dn:
                    raise TokenRejected("the token has no subject (sub)")
                vo = verified.vo
                fqans = tuple(
                    f"/{vo}/Role={g[len(vo) + 1 :]}" if g.startswith(vo + "/") else f"/{g}"
                    for g in verified.groups
                )
                # The Origin's role was checked against the token's groups (whole "<vo>/<role>");
                # it counts only for the VO this server serves.
                role = verified.role if vo == self.settings.vo else None
                return Identity(dn, fqans, self._roles(dn, (), role, token=True), "token", remote)
            if self.settings.auth_mode == "strict":
                raise TokenRejected("this server has no token issuers configured (oidc_config)")
            claims = _unverified_claims(token)
            dn = token_dn(claims)
            groups = claims.get("groups") or claims.get("wlcg.groups") or []
            fqans = tuple("/" + str(g).strip("/") for g in groups) if isinstance(groups, list) else ()
            if dn:
                return Identity(dn, fqans, self._roles(dn, (), token=True), "token", remote)
        return Identity(remote_host=remote)


__all__ = ["Authenticator", "BanList", "TokenRejected", "fqan_role", "token_dn"]
