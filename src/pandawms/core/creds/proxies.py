"""Credentials Harvester and pilots fetch from the server: proxies, key pairs and token keys.

The real server keeps them in its proxy cache and in a table of "special dispatch parameters";
here operators put them as files into one directory (setting ``creds_dir``), kept readable by
the server only:

* ``proxies/<user>[.<role>].pem`` - a user's proxy, by the compact name of the DN it is for and
  the VOMS role asked for (``creds/get_proxy``, legacy ``getProxy``);
* ``keys/<key name>`` - one half of a key pair by its name (``creds/get_key_pair``, ``getKeyPair``);
* ``token_keys/<client name>`` - the latest token key of a client (``creds/get_token_key``).

In a name, every character other than letters, digits, ``.``, ``_`` and ``-`` is written ``_``
(``atlas:/atlas/Role=production`` -> ``atlas__atlas_Role_production``). Who may ask is decided by
the access rules (production role); without ``creds_dir`` every request is refused with a
message naming the setting.
"""

from __future__ import annotations

import re
from pathlib import Path

from pandawms.config import Settings
from pandawms.model.errors import Declined, PandaError, StatusCode
from pandawms.model.identity import clean_user_id

#: Largest credential file served (a proxy chain is a few kB).
MAX_CRED_BYTES = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class CredentialMissing(Declined):
    """The asked-for credential is not in the directory (legacy StatusCode 80, "missing key")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=StatusCode.MISSING_KEY)


def file_part(text: str) -> str:
    """``text`` as one safe path component (see the module documentation)."""
    if not text or len(text) > 200:
        raise PandaError("Argument error: a credential name must have 1 to 200 characters")
    safe = _UNSAFE.sub("_", text)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe


def _root(settings: Settings) -> Path:
    if not settings.creds_dir:
        raise PandaError(
            "no credential cache is configured on this server: set creds_dir (PANDA_CREDS_DIR)",
            code=StatusCode.PERMS,
        )
    return Path(settings.creds_dir)


def _read(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CRED_BYTES + 1)
    except FileNotFoundError:
        raise CredentialMissing(f"{what} is missing on this server") from None
    except OSError as exc:
        raise Declined(f"{what} cannot be read on this server: {exc.strerror}") from None
    if len(data) > MAX_CRED_BYTES:
        raise Declined(f"{what} is larger than {MAX_CRED_BYTES} bytes")
    return data.decode("utf-8", "replace")


def proxy_path(settings: Settings, dn: str, role: str | None) -> Path:
    """Where the proxy of ``dn`` with ``role`` is kept."""
    name = file_part(clean_user_id(dn) or dn)
    if role:
        name += "." + file_part(role)
    return _root(settings) / "proxies" / f"{name}.pem"


def get_proxy(settings: Settings, dn: str, role: str | None) -> str:
    """The PEM text of the proxy kept for ``dn`` and ``role``."""
    path = proxy_path(settings, dn, role)
    return _read(
        path, f"proxy for {clean_user_id(dn)[:100]!r}" + (f" with role {role[:100]!r}" if role else "")
    )


def get_key_pair(settings: Settings, public_key_name: str, private_key_name: str) -> tuple[str, str]:
    """The public and the private key of a pair, by their names."""
    keys = _root(settings) / "keys"
    public = _read(keys / file_part(public_key_name), f"{public_key_name[:100]}")
    private = _read(keys / file_part(private_key_name), f"{private_key_name[:100]}")
    return public, private


def get_token_key(settings: Settings, client_name: str) -> str:
    """The latest token key of ``client_name`` (the file's first line)."""
    text = _read(
        _root(settings) / "token_keys" / file_part(client_name), f"token key for {client_name[:100]!r}"
    )
    lines = text.strip().splitlines()
    if not lines:
        raise CredentialMissing(f"token key for {client_name[:100]!r} is empty on this server")
    return lines[0].strip()
