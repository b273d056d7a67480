"""OIDC bearer tokens: signature, issuer, audience and expiry, against configured issuers.

The configuration file (``oidc_config``) lists the issuers we accept::

    {"issuers": [{"issuer": "https://iam.example.org/", "audience": "pandawms", "vo": "atlas",
                  "jwks_uri": "https://iam.example.org/jwk" | "jwks_file": "/etc/panda/jwks.json",
                  "groups_claim": "groups", "algorithms": ["RS256", "ES256"]}]}

Keys are cached per issuer. A key set named by URL is fetched in a background thread, never
on the event loop, with a timeout, one fetch at a time per issuer and process: when it gets
old the known keys keep verifying tokens while a new copy is fetched, and a token naming a key
id we do not know starts a fetch (at most every 30 s, so a flood of bad tokens cannot make us
hammer the identity provider) which its request may wait for a few seconds
(:class:`KeysPending`); an identity provider that hangs then costs that request a 401, not
every client of the worker a stall.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

from pandawms.model.errors import PandaError, StatusCode, Unauthenticated

KEY_TTL = 600.0
REFETCH_INTERVAL = 30.0
#: Seconds one fetch of a key set may take (each connect and read).
JWKS_TIMEOUT = 5.0
#: Seconds a request whose token names an unknown key id waits for the fetch it started.
UNKNOWN_KID_WAIT = 3.0

log = logging.getLogger("pandawms.auth")


class TokenRejected(Unauthenticated):
    """The bearer token is not acceptable; a 401 with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token rejected: {reason}", code=StatusCode.INVALID)


class KeysPending(TokenRejected):
    """The token's key id is unknown and a fetch of the issuer's keys is under way.

    A caller on the event loop may wait (without blocking) for ``done`` and verify again; one
    that does not wait has a plain 401.
    """

    def __init__(self, reason: str, done: concurrent.futures.Future[bool]) -> None:
        super().__init__(reason)
        self.done = done


@dataclass
class Issuer:
    """One accepted token issuer and its cached keys."""

    issuer: str
    audience: str | None
    vo: str
    jwks_uri: str = ""
    jwks_file: str = ""
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    keys: dict[str, Any] = field(default_factory=dict)
    fetched: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When the last fetch from ``jwks_uri`` started (0: never), and the one under way.
    attempted: float = 0.0
    refresh: concurrent.futures.Future[bool] | None = None

    def _load(self) -> None:
        if self.jwks_file:
            with open(self.jwks_file, encoding="utf-8") as handle:
                doc = json.load(handle)
        else:
            with urllib.request.urlopen(self.jwks_uri, timeout=JWKS_TIMEOUT) as reply:  # noqa: S310 - configured URI
                doc = json.loads(reply.read(1024 * 1024))
        keys = {}
        for entry in doc.get("keys", []):
            try:
                keys[entry.get("kid", "")] = jwt.PyJWK(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError):
                continue
        self.keys = keys
        self.fetched = time.monotonic()

    def start_refresh(self) -> concurrent.futures.Future[bool]:
        """The fetch of ``jwks_uri`` under way, or a new one in a background thread."""
        with self.lock:
            if self.refresh is not None:
                return self.refresh
            self.attempted = time.monotonic()
            done: concurrent.futures.Future[bool] = concurrent.futures.Future()
            self.refresh = done
        threading.Thread(target=self._fetch, args=(done,), name="pandawms-jwks", daemon=True).start()
        return done

    def _fetch(self, done: concurrent.futures.Future[bool]) -> None:
        ok = False
        try:
            self._load()
            ok = True
        except Exception as exc:  # noqa: BLE001 - keep the keys we have; report, retry later
            log.warning("cannot fetch the keys of %s from %s: %s", self.issuer, self.jwks_uri, exc)
        finally:
            with self.lock:
                self.refresh = None
            done.set_result(ok)

    def key_for(self, kid: str) -> Any:
        """The verification key ``kid``.

        A key file is read again when stale or lacking ``kid``. Keys from a URL are never
        fetched in the caller's thread: see the module documentation.
        """
        if self.jwks_file:
            return self._key_from_file(kid)
        now = time.monotonic()
        may_fetch = now - self.attempted > REFETCH_INTERVAL or self.attempted == 0.0
        if now - self.fetched > KEY_TTL and may_fetch:
            self.start_refresh()  # meanwhile the keys we know still verify
        key = self.keys.get(kid)
        if key is not None:
            return key
        pending = self.refresh
        if pending is None and may_fetch:
            pending = self.start_refresh()
        if pending is not None:
            raise KeysPending(
                f"unknown key id {kid!r} for issuer {self.issuer} (keys being fetched)", pending
            )
        raise TokenRejected(f"unknown key id {kid!r} for issuer {self.issuer}")

    def _key_from_file(self, kid: str) -> Any:
        with self.lock:
            age = time.monotonic() - self.fetched
            if age > KEY_TTL or (kid not in self.keys and age > REFETCH_INTERVAL):
                try:
                    self._load()
                except (OSError, ValueError) as exc:
                    if not self.keys:
                        raise TokenRejected(f"cannot read the keys of {self.issuer}: {exc}") from None
            key = self.keys.get(kid)
        if key is None:
            raise TokenRejected(f"unknown key id {kid!r} for issuer {self.issuer}")
        return key


@dataclass(frozen=True)
class TokenIdentity:
    """What a verified token tells us."""

    claims: dict[str, Any]
    vo: str
    role: str | None
    groups: tuple[str, ...]


class TokenVerifier:
    """Verifies tokens against the configured issuers."""

    def __init__(self, config_path: str) -> None:
        try:
            with open(config_path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            raise PandaError(f"cannot read oidc_config {config_path}: {exc}") from None
        self.issuers: dict[str, Issuer] = {}
        for entry in doc.get("issuers", []):
            if (
                not entry.get("issuer")
                or not entry.get("vo")
                or not (entry.get("jwks_uri") or entry.get("jwks_file"))
            ):
                raise PandaError(
                    f"oidc_config {config_path}: every issuer needs issuer, vo and jwks_uri or jwks_file"
                )
            self.issuers[entry["issuer"]] = Issuer(
                issuer=entry["issuer"],
                audience=entry.get("audience"),
                vo=entry["vo"],
                jwks_uri=entry.get("jwks_uri", ""),
                jwks_file=entry.get("jwks_file", ""),
                groups_claim=entry.get("groups_claim", "groups"),
                algorithms=tuple(entry.get("algorithms", ("RS256", "ES256"))),
            )

    def prefetch(self) -> None:
        """Start fetching every issuer's keys from its URL (in the background)."""
        for issuer in self.issuers.values():
            if issuer.jwks_uri and not issuer.jwks_file:
                issuer.start_refresh()

    def verify(self, token: str, origin: str | None) -> TokenIdentity:
        """Check ``token``; ``origin`` (the Origin header) names the VO and optionally a role."""
        if not origin:
            raise TokenRejected("the Origin header must name the VO (e.g. 'atlas' or 'atlas.production')")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        issuer = self.issuers.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise TokenRejected(f"issuer {str(unverified.get('iss'))[:100]!r} is not accepted here")
        if header.get("alg") not in issuer.algorithms:
            raise TokenRejected(f"algorithm {header.get('alg')!r} is not accepted")
        key = issuer.key_for(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(issuer.algorithms),
                audience=issuer.audience,
                issuer=issuer.issuer,
                options={"require": ["exp", "iss"], "verify_aud": issuer.audience is not None},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"the token is not for audience {issuer.audience!r}") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(str(exc)) from None
        vo, _, role = origin.replace(":", ".").partition(".")
        if vo != issuer.vo:
            raise TokenRejected(f"Origin names VO {vo!r} but the token's issuer serves {issuer.vo!r}")
        raw_groups = claims.get(issuer.groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = raw_groups.split()
        groups = tuple(str(g).strip("/") for g in raw_groups if isinstance(g, str))
        if vo not in groups and not any(g.startswith(vo + "/") for g in groups):
            raise TokenRejected(f"the token's groups do not include the VO {vo!r}")
        if role and f"{vo}/{role}" not in groups:
            raise TokenRejected(f"the token's groups do not grant role {role!r} in {vo!r}")
        return TokenIdentity(claims, vo, role or None, groups)
