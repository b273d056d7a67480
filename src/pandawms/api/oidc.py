"""OIDC bearer tokens: signature, issuer, audience and expiry, against configured issuers.

The configuration file (``oidc_config``) lists the issuers we accept::

    {"issuers": [{"issuer": "https://iam.example.org/", "audience": "pandawms", "vo": "atlas",
                  "jwks_uri": "https://iam.example.org/jwk" | "jwks_file": "/etc/panda/jwks.json",
                  "groups_claim": "groups", "algorithms": ["RS256", "ES256"]}]}

Keys are cached per issuer and fetched again when a token names a key id we do not know (at
most every 30 s, so a flood of bad tokens cannot make us hammer the identity provider).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

from pandawms.model.errors import PandaError

KEY_TTL = 600.0
REFETCH_INTERVAL = 30.0


class TokenRejected(PandaError):
    """The bearer token is not acceptable; a 401 with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token rejected: {reason}", http_status=401)


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

    def _load(self) -> None:
        if self.jwks_file:
            with open(self.jwks_file, encoding="utf-8") as handle:
                doc = json.load(handle)
        else:
            with urllib.request.urlopen(self.jwks_uri, timeout=10) as reply:  # noqa: S310 - configured URI
                doc = json.loads(reply.read(1024 * 1024))
        keys = {}
        for entry in doc.get("keys", []):
            try:
                keys[entry.get("kid", "")] = jwt.PyJWK(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError):
                continue
        self.keys = keys
        self.fetched = time.monotonic()

    def key_for(self, kid: str) -> Any:
        """The verification key ``kid``; fetch the key set when it is stale or lacks ``kid``."""
        with self.lock:
            age = time.monotonic() - self.fetched
            if age > KEY_TTL or (kid not in self.keys and age > REFETCH_INTERVAL):
                try:
                    self._load()
                except (OSError, ValueError) as exc:
                    if not self.keys:
                        raise TokenRejected(f"cannot fetch the keys of {self.issuer}: {exc}") from None
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
