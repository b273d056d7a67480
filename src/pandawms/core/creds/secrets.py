"""User secrets: small key-value pairs a user stores for their jobs (pbook set_secret).

Each owner's secrets are one JSON object, encrypted at rest with the server key (Fernet: AES
with an HMAC, so a row altered in the database is refused rather than decrypted to garbage).
Only the owner reads them back (creds/get_user_secrets), and the pilot of a job in debug mode
reads its own credential's secrets. Limits follow pbook's: a value of at most 1000 kB.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_user import user_secrets
from pandawms.model.errors import Forbidden, PandaError, TooLarge

log = logging.getLogger("pandawms.secrets")

#: pbook refuses values above 1000 kB before sending; the server holds the same line.
MAX_VALUE_BYTES = 1000 * 1024
MAX_KEY_CHARS = 200
MAX_SECRETS_PER_USER = 100
#: All of one user's secrets together (plain JSON, before encryption).
MAX_TOTAL_BYTES = 2 * 1024 * 1024
#: Prefix pbook gives a secret uploaded from a file (its value is the file in base64).
FILE_PREFIX = "___file___:"


class SecretsUnavailable(PandaError):
    """The server key cannot be read or does not open the stored secrets."""


def _key_file(rt: Runtime) -> Path:
    return Path(rt.settings.data_dir) / "secrets.key"


def _fernet(rt: Runtime) -> Fernet:
    """The cipher of the configured key, or of ``<data_dir>/secrets.key`` (made once, mode 0600).

    Kept by the runtime: made once per runtime, whoever asks first.
    """
    configured = rt.settings.secrets_key.strip()
    cache_key = configured or str(_key_file(rt).absolute())

    def make() -> Fernet:
        key = configured.encode() if configured else _local_key(_key_file(rt))
        try:
            return Fernet(key)
        except ValueError:
            raise SecretsUnavailable(
                "user secrets are unavailable: the server key (PANDA_SECRETS_KEY or "
                "PANDA_SECRETS_KEY_FILE) is not a Fernet key (urlsafe base64 of 32 bytes)"
            ) from None

    return rt.kept(("secrets.fernet", cache_key), make)


def _local_key(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.warning(
        "made a new key for user secrets in %s; give every node the same PANDA_SECRETS_KEY_FILE", path
    )
    return key


def _decrypt(rt: Runtime, token: str) -> dict[str, str]:
    try:
        plain = _fernet(rt).decrypt(token.encode())
    except InvalidToken:
        raise SecretsUnavailable(
            "stored secrets cannot be decrypted with this server's key (PANDA_SECRETS_KEY differs "
            "between nodes, or was changed); set them again"
        ) from None
    data = orjson.loads(plain)
    return data if isinstance(data, dict) else {}


def _encrypt(rt: Runtime, data: dict[str, str]) -> str:
    return _fernet(rt).encrypt(orjson.dumps(data)).decode()


def _check(key: str | None, value: str | None) -> None:
    if key is not None:
        if not key or len(key) > MAX_KEY_CHARS:
            raise PandaError(f"secret key must be 1 to {MAX_KEY_CHARS} characters")
        if "\x00" in key:
            raise PandaError("secret key contains a NUL character")
    if value is not None and len(value.encode()) > MAX_VALUE_BYTES:
        raise TooLarge(f"The value length exceeds the limit ({MAX_VALUE_BYTES // 1024} kB)")


def _owner(owner: str) -> str:
    if not owner or owner == "anonymous":
        raise Forbidden("secrets need an identified user (a certificate or a token)")
    return owner


def set_secret(rt: Runtime, owner: str, key: str | None, value: str | None) -> str:
    """Set ``key`` to ``value``; ``value`` None deletes the key, ``key`` None deletes them all.

    The owner's row is read and written in one transaction, locked on the databases that can,
    so two concurrent changes cannot lose one another.
    """
    owner = _owner(owner)
    _check(key, value)
    for attempt in (1, 2):
        try:
            with write_tx(rt.engine) as conn:
                row = conn.execute(
                    select(user_secrets.c.data).where(user_secrets.c.owner == owner).with_for_update()
                ).first()
                data = _decrypt(rt, row[0]) if row is not None else {}
                if key is None:
                    data = {}
                elif value is None:
                    data.pop(key, None)
                    data.pop(FILE_PREFIX + key, None)
                else:
                    data[key] = value
                if len(data) > MAX_SECRETS_PER_USER:
                    raise PandaError(f"at most {MAX_SECRETS_PER_USER} secrets per user")
                if len(orjson.dumps(data)) > MAX_TOTAL_BYTES:
                    raise TooLarge(
                        f"all secrets of a user together may be at most {MAX_TOTAL_BYTES // 1024} kB",
                    )
                values: dict[str, Any] = {"data": _encrypt(rt, data), "modificationTime": utcnow()}
                if row is None:
                    conn.execute(user_secrets.insert().values(owner=owner, **values))
                else:
                    conn.execute(user_secrets.update().where(user_secrets.c.owner == owner).values(**values))
            return "OK"
        except IntegrityError:
            # Another request made the owner's first row at the same moment: redo on top of it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def get_secrets(rt: Runtime, owner: str, keys: list[str] | None = None) -> dict[str, str]:
    """The owner's secrets (only ``keys`` when given)."""
    owner = _owner(owner)
    with read_tx(rt.engine) as conn:
        row = conn.execute(select(user_secrets.c.data).where(user_secrets.c.owner == owner)).first()
    data = _decrypt(rt, row[0]) if row is not None else {}
    if keys:
        wanted = set(keys)
        data = {k: v for k, v in data.items() if k in wanted}
    return data
