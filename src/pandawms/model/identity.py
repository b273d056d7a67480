"""Who is calling: the identity every request carries into the core.

Two names come from a DN. The *compact name* follows PanDA's rules (the DN with its
organisational parts, proxy suffixes and numeric CNs removed): it is what a job's
``prodUserName`` holds and what clients display, and many people can share it (``CN=Alice
Smith`` and ``CN=Alice Smith 2`` both give ``Alice Smith``). The *owner DN* is the DN with only
the proxy CNs removed: it names one credential holder, and ownership is decided on it alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Width of the DN columns (jobs.prodUserID, tasks.dn): longer DNs are stored cut.
STORED_DN_LENGTH = 250

_PROXY_CN = re.compile(r"/CN=(proxy|limited proxy|\d+)$")


def owner_dn(dn: str) -> str:
    """The DN behind any proxies (``/DC=ch/.../CN=Jane Doe/CN=123/CN=proxy`` -> ``.../CN=Jane Doe``).

    Proxy CNs (trailing ``CN=proxy``, ``CN=limited proxy``, ``CN=<digits>``) are what a holder
    adds when delegating; everything else in the DN, numeric CNs inside it (as CERN's user DNs
    have) included, tells one holder from another.
    """
    dn = dn.strip()
    while True:
        stripped = _PROXY_CN.sub("", dn)
        if stripped == dn:
            return dn
        dn = stripped


def clean_user_id(dn: str) -> str:
    """The compact user name for a DN (``/DC=ch/.../CN=Jane Doe/CN=proxy`` -> ``Jane Doe``)."""
    if not dn:
        return ""
    name = dn
    for pattern in (
        r"/CN=limited proxy",
        r"/CN=proxy",
        r"limited proxy",
        r"/(DC|O|OU|C|L|ST)=[^/]*",
        r"/CN=\d+",
        r"/CN=Robot:[^/]*",
        r"/CN=nickname:[^/]*",
    ):
        name = re.sub(pattern, "", name)
    cns = [part[3:] for part in name.split("/") if part.startswith("CN=")]
    if cns:
        name = cns[-1]
    else:
        name = name.strip("/")
    name = re.sub(r"[ _]\d+$", "", name)
    name = re.sub(r"@.*$", "", name)
    name = re.sub(r"[()'\"]", "", name)
    return name.strip()


@dataclass(frozen=True)
class Identity:
    """The caller as the API layer established it."""

    #: Distinguished name (slash form) or the synthetic DN of a token; empty when anonymous.
    dn: str = ""
    #: VOMS FQANs or token groups mapped to FQAN form.
    fqans: tuple[str, ...] = ()
    #: Roles established by the authenticator ("user", "pilot", "production", "manager",
    #: "admin"): the only source of rights. FQANs are informational.
    roles: frozenset[str] = field(default_factory=frozenset)
    #: How the identity was established: "anonymous", "x509", "header", "token".
    method: str = "anonymous"
    #: Remote address as seen by the server.
    remote_host: str = ""

    @property
    def name(self) -> str:
        """Compact user name (``prodUserName``)."""
        return clean_user_id(self.dn) if self.dn else "anonymous"

    @property
    def owner(self) -> str:
        """The identity that owns jobs and tasks; empty when anonymous.

        For a certificate, the DN without proxy CNs (:func:`owner_dn`). For a token, the
        ``/O=<issuer>/OU=<subject>`` that begins its DN (``api/auth.py:token_dn``): the name
        claims after it may change without making the holder someone else.
        """
        if self.method == "token":
            return self.dn.split("/CN=", 1)[0]
        return owner_dn(self.dn)

    @property
    def is_production(self) -> bool:
        """Production role, as the authenticator granted it (whole DN or FQAN of our VO)."""
        return "production" in self.roles

    @property
    def is_pilot(self) -> bool:
        """May pull and update jobs on behalf of a queue."""
        return self.is_production or "pilot" in self.roles

    def owns(self, owner: str | None) -> bool:
        """Whether ``owner`` (a stored DN: a job's prodUserID, a task's dn) names this caller.

        Stored DNs are cut at :data:`STORED_DN_LENGTH`; a cut one matches the DN it began.
        """
        mine = self.owner
        if not mine or not owner:
            return False
        if len(owner) >= STORED_DN_LENGTH and mine.startswith(owner):
            return True
        if self.method == "token":
            return owner == mine or owner.startswith(mine + "/CN=")
        return owner_dn(owner) == mine


ANONYMOUS = Identity()
