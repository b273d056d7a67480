"""The sandbox cache: files users upload (prun/pathena sandboxes), served to worker nodes.

Files live in one directory that production mounts on every node (``cache_dir``, by default
``<data_dir>/cache``) and are recorded in ``cache_files`` with their owner, size and the gzip
CRC that panda-client uses to ask whether an identical sandbox is already there. A file is
written under a temporary name and linked into place, so a reader never sees half a file and
two uploads of one name cannot overwrite each other. The cleaner removes files nobody used for
``cache_lifetime`` seconds unless an active task still refers to them.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, and_, select
from sqlalchemy.exc import IntegrityError

from pandawms.config import Settings
from pandawms.core.files import SAFE_NAME, cache_dir, check_name
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_tasks import cache_files, task_params, tasks
from pandawms.model.errors import Busy, Conflict, Forbidden, NotFound, PandaError, TooLarge
from pandawms.model.identity import Identity
from pandawms.model.task_states import ACTIVE

log = logging.getLogger("pandawms.cache")

_TMP_PREFIX = ".upload-"


def gzip_crc(data: bytes) -> str | None:
    """The CRC32 stored in a gzip trailer, as text (what panda-client sends as ``checksum``)."""
    if len(data) < 18 or data[:2] != b"\x1f\x8b":
        return None
    crc, _size = struct.unpack("<II", data[-8:])
    return str(crc)


def public_host(settings: Settings, node: str) -> str:
    """The host name clients should use for cached files (``FOUND:<host>:<name>`` replies)."""
    if settings.cache_host:
        return settings.cache_host
    if settings.host and settings.host not in ("0.0.0.0", "::", "*"):
        return settings.host
    return node


#: A full file system or an exhausted quota: the upload may succeed later, so a 503, not a 500.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class CacheFull(Busy):
    """The cache directory has no room (ENOSPC/EDQUOT); answered 503 with Retry-After.

    Like a database that cannot take a write, a full disk is the server's trouble and passes:
    the client is told to retry later, and no partial file is left behind.
    """

    def __init__(self) -> None:
        super().__init__(
            "ERROR: upload failure. The sandbox cache of the PanDA server is full; retry later",
        )


@dataclass(frozen=True)
class StoredFile:
    """A file in the cache."""

    name: str
    size: int
    checksum: str | None


def store(rt: Runtime, who: Identity, filename: str, data: bytes) -> StoredFile:
    """Write an uploaded file into the cache and record it; refuse too large or existing names."""
    limit = rt.settings.cache_max_bytes
    if len(data) > limit:
        raise TooLarge(
            f"ERROR: upload failure. Exceeded size limit {len(data)} > {limit} bytes. "
            "Please remove redundant files from your work area",
        )
    # panda-client sends the base name; anything else must not reach the file system.
    name = check_name(filename.replace("\\", "/").split("/")[-1])
    directory = cache_dir(rt.settings)
    final = directory / name
    temp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, final)
        except FileExistsError:
            raise Conflict("ERROR: cannot overwrite file") from None
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            log.error("sandbox cache %s is full: %s", directory, exc.strerror)
            raise CacheFull() from None
        raise
    finally:
        temp.unlink(missing_ok=True)
    checksum = gzip_crc(data)
    now = utcnow()
    try:
        with write_tx(rt.engine) as conn:
            conn.execute(
                cache_files.insert().values(
                    fileName=name,
                    userName=who.name[:128],
                    hostName=public_host(rt.settings, rt.node)[:128],
                    fileSize=len(data),
                    checksum=checksum,
                    creationTime=now,
                    modificationTime=now,
                )
            )
    except IntegrityError:
        # A row without a file (a crash after a delete): keep the new file, refresh the row.
        with write_tx(rt.engine) as conn:
            conn.execute(
                cache_files.update()
                .where(cache_files.c.fileName == name)
                .values(
                    userName=who.name[:128],
                    fileSize=len(data),
                    checksum=checksum,
                    creationTime=now,
                    modificationTime=now,
                )
            )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return StoredFile(name, len(data), checksum)


def find_reusable(rt: Runtime, who: Identity, size: int, checksum: str) -> str | None:
    """``FOUND:<host>:<name>`` for the caller's recent file of this size and CRC, else None.

    A reused file is touched so that it lives another full lifetime.
    """
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=rt.settings.cache_lifetime)
    with write_tx(rt.engine) as conn:
        row = conn.execute(
            select(cache_files.c.fileName, cache_files.c.hostName)
            .where(
                and_(
                    cache_files.c.userName == who.name[:128],
                    cache_files.c.fileSize == size,
                    cache_files.c.checksum == checksum[:32],
                    cache_files.c.modificationTime > cutoff,
                )
            )
            .order_by(cache_files.c.creationTime.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        local = row[1] in (None, "", public_host(rt.settings, rt.node))
        if local and not (cache_dir(rt.settings) / row[0]).is_file():
            return None
        conn.execute(
            cache_files.update().where(cache_files.c.fileName == row[0]).values(modificationTime=now)
        )
    return f"FOUND:{row[1] or public_host(rt.settings, rt.node)}:{row[0]}"


def touch(conn: Connection, names: Iterable[str], now: dt.datetime) -> int:
    """Mark cached files as used now (a task refers to them); returns how many exist."""
    wanted = sorted({n for n in names if SAFE_NAME.match(n)})[:1000]
    if not wanted:
        return 0
    return int(
        conn.execute(
            cache_files.update().where(cache_files.c.fileName.in_(wanted)).values(modificationTime=now)
        ).rowcount
    )


def path_for_serving(rt: Runtime, name: str) -> Path:
    """The file to send for ``GET /cache/<name>`` (or ``jedilog/<name>``, Harvester's worker logs);
    NotFound for unknown or unsafe names."""
    directory = cache_dir(rt.settings)
    if name.startswith("jedilog/"):
        directory, name = directory / "jedilog", name[len("jedilog/") :]
    try:
        check_name(name)
    except PandaError:
        raise NotFound(f"no cached file {name[:100]}") from None
    path = directory / name
    if not path.is_file():
        raise NotFound(f"no cached file {name[:100]}")
    return path


def _referenced_by_active_task(conn: Connection, name: str) -> bool:
    pattern = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    stmt = (
        select(task_params.c.jediTaskID)
        .join(tasks, tasks.c.jediTaskID == task_params.c.jediTaskID)
        .where(
            tasks.c.status.in_([s.value for s in ACTIVE]), task_params.c.taskParams.like(pattern, escape="\\")
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def expire(rt: Runtime, now: dt.datetime | None = None, batch: int = 500) -> int:
    """Delete files unused for ``cache_lifetime`` that no active task refers to; how many went.

    Also removes temporary files of uploads that died more than an hour ago.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=rt.settings.cache_lifetime)
    directory = cache_dir(rt.settings)
    with read_tx(rt.engine) as conn:
        candidates = [
            str(r[0])
            for r in conn.execute(
                select(cache_files.c.fileName)
                .where(cache_files.c.modificationTime <= cutoff)
                .order_by(cache_files.c.modificationTime)
                .limit(batch)
            )
        ]
        keep = {name for name in candidates if _referenced_by_active_task(conn, name)}
    removed = 0
    for name in candidates:
        with write_tx(rt.engine) as conn:
            if name in keep:
                conn.execute(
                    cache_files.update().where(cache_files.c.fileName == name).values(modificationTime=now)
                )
                continue
            gone = conn.execute(
                cache_files.delete().where(
                    cache_files.c.fileName == name, cache_files.c.modificationTime <= cutoff
                )
            ).rowcount
            if gone:
                (directory / name).unlink(missing_ok=True)
                removed += 1
    stale = now.replace(tzinfo=dt.UTC).timestamp() - 3600
    for path in directory.glob(_TMP_PREFIX + "*"):
        try:
            if path.stat().st_mtime < stale:
                path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove stale upload %s", path)
    return removed


def _cache_name(file_name: str) -> str:
    """The cached file a client names (clients may send a path or URL: its last part counts)."""
    return check_name(file_name.replace("\\", "/").split("/")[-1])


def touch_file(rt: Runtime, file_name: str) -> None:
    """Keep a cached file another full lifetime (``file_server/touch_cache_file``).

    The cleaner counts from the recorded last use, so that is what moves; the file's mtime too,
    for operators who look at the directory. NotFound when the cache has no such file.
    """
    name = _cache_name(file_name)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        touched = conn.execute(
            cache_files.update().where(cache_files.c.fileName == name).values(modificationTime=now)
        ).rowcount
    path = cache_dir(rt.settings) / name
    if not touched and not path.is_file():
        raise NotFound(f"Failed to touch file with: no cached file {name}")
    if path.is_file():
        os.utime(path, None)


def release_file(rt: Runtime, who: Identity, file_name: str, open_mode: bool) -> bool:
    """Let the cleaner take a cached file (``file_server/delete_cache_file``); False if unknown.

    The real server keeps the file (a job may be rebrokered and need it again) and answers
    success. Here the owner (or production) marks it unused, so the cleaner removes it on its
    next pass unless an active task still refers to it: nothing that runs loses its sandbox.
    """
    name = _cache_name(file_name)
    with write_tx(rt.engine) as conn:
        owner = conn.execute(select(cache_files.c.userName).where(cache_files.c.fileName == name)).scalar()
        if owner is None:
            return False
        if not (open_mode or who.is_production or owner == who.name[:128]):
            raise Forbidden(f"{name} belongs to another user")
        conn.execute(
            cache_files.update()
            .where(cache_files.c.fileName == name)
            .values(modificationTime=dt.datetime(2000, 1, 1))
        )
    return True


def register_file(
    rt: Runtime, user_name: str, host_name: str, file_name: str, file_size: int, checksum: str
) -> str:
    """Record a file another cache server holds (``file_server/register_cache_file``).

    ``OK`` when recorded, ``WARNING: file exist`` when the name is already known (the row is
    left as it was), as the real server answers.
    """
    name = _cache_name(file_name)
    if file_size < 0:
        raise PandaError("Argument error: file_size must not be negative")
    now = utcnow()
    try:
        with write_tx(rt.engine) as conn:
            if conn.execute(select(cache_files.c.fileName).where(cache_files.c.fileName == name)).first():
                return "WARNING: file exist"
            conn.execute(
                cache_files.insert().values(
                    fileName=name,
                    userName=user_name[:128],
                    hostName=host_name[:128],
                    fileSize=file_size,
                    checksum=checksum[:32],
                    creationTime=now,
                    modificationTime=now,
                )
            )
    except IntegrityError:
        return "WARNING: file exist"
    return "OK"
