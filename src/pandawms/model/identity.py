"""Who is calling: the identity every request carries into the core.

The compact user name rules follow PanDA's: the name a job's ``prodUserName`` holds, and the
key for ownership checks, is the DN with its organisational parts, proxy suffixes and numeric
CNs removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PRODUCTION_FQAN = re.compile(r"^/[^/]+(/usatlas)?/Role=production")


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
    #: Roles granted by configuration: "production", "pilot", "admin".
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
    def is_production(self) -> bool:
        """Production role: a configured DN or a Role=production FQAN."""
        return "production" in self.roles or any(_PRODUCTION_FQAN.match(f) for f in self.fqans)

    @property
    def is_pilot(self) -> bool:
        """May pull and update jobs on behalf of a queue."""
        return self.is_production or "pilot" in self.roles or any("Role=pilot" in f for f in self.fqans)


ANONYMOUS = Identity()
