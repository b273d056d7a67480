"""Worker logs Harvester uploads (``file_server/upload_jedi_log``), kept in ``<cache_dir>/jedilog``.

Harvester's propagator sends a worker's stdout, stderr and batch log in pieces: each call
carries the bytes written since the last one, zlib-compressed, under the name
``<harvesterID>__<file name>`` that it also reported as the worker's log URL
(``<pandaCacheURL_R>/<name>``). So a piece is decompressed and appended, never replacing what
came before, up to ``jedi_log_max_bytes`` per file. Each file is recorded in ``jedi_logs`` with
the worker whose reported URL names it; the monitor's job page finds a job's workers through
``harvester_rel_jobs_workers`` and links their logs. Served as ``/cache/jedilog/<name>``; the
cache cleaner removes a log nothing was appended to for ``cache_lifetime``.
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from pathlib import Path

from sqlalchemy import or_, select

from pandawms.core.files import cache_dir, check_name
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_meta import jedi_logs
from pandawms.db.schema_workers import harvester_workers
from pandawms.model.errors import NotFound, PandaError, TooLarge
from pandawms.model.identity import Identity

SUBDIR = "jedilog"


def log_dir(rt: Runtime) -> Path:
    """The directory of uploaded logs (created on first use)."""
    path = cache_dir(rt.settings) / SUBDIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _expand(data: bytes, limit: int) -> bytes:
    """The piece's text: zlib data is inflated (never past ``limit``), anything else kept as is."""
    if data[:1] != b"\x78":
        return data
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return data
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"ERROR: upload failure. Exceeded size limit of {limit} bytes")
    return out


def _worker_of(rt: Runtime, name: str) -> tuple[str | None, int | None]:
    """The worker whose reported log URL ends with ``/<name>``."""
    harvester_id = name.split("__", 1)[0] if "__" in name else None
    if not harvester_id:
        return None, None
    suffix = "%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    w = harvester_workers
    stmt = (
        select(w.c.workerID)
        .where(w.c.harvesterID == harvester_id)
        .where(
            or_(*(col.like(suffix, escape="\\") for col in (w.c.stdOut, w.c.stdErr, w.c.batchLog, w.c.jdl)))
        )
        .order_by(w.c.workerID.desc())
        .limit(1)
    )
    with read_tx(rt.engine) as conn:
        row = conn.execute(stmt).first()
    return harvester_id, (int(row[0]) if row else None)


def append(rt: Runtime, who: Identity, filename: str, data: bytes) -> tuple[str, int]:
    """Append one piece to the named log; its safe name and new size."""
    limit = rt.settings.jedi_log_max_bytes
    name = check_name(filename.replace("\\", "/").split("/")[-1])
    text = _expand(data, limit)
    path = log_dir(rt) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size + len(text) > limit:
            raise TooLarge(
                f"ERROR: upload failure. Exceeded size limit: {name} would hold {size + len(text)} > {limit} bytes",
            )
        os.write(fd, text)
        size += len(text)
    finally:
        os.close(fd)
    harvester_id, worker_id = _worker_of(rt, name)
    with write_tx(rt.engine) as conn:
        conn.execute(jedi_logs.delete().where(jedi_logs.c.fileName == name))
        conn.execute(
            jedi_logs.insert().values(
                fileName=name,
                harvesterID=harvester_id[:50] if harvester_id else None,
                workerID=worker_id,
                fileSize=size,
                uploadedBy=who.name[:128] or None,
                modificationTime=utcnow(),
            )
        )
    return name, size


def read(rt: Runtime, name: str, offset: int) -> str:
    """The log's text from ``offset`` on (at most ``jedi_log_max_bytes``)."""
    path = log_dir(rt) / check_name(name.replace("\\", "/").split("/")[-1])
    if offset < 0:
        raise PandaError("Argument error: offset must not be negative")
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(rt.settings.jedi_log_max_bytes).decode("utf-8", "replace")
    except FileNotFoundError:
        raise NotFound(f"no log named {name[:100]}") from None


def expire(rt: Runtime, now: dt.datetime | None = None, batch: int = 500) -> int:
    """Delete logs nothing was appended to for ``cache_lifetime`` seconds; how many went."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=rt.settings.cache_lifetime)
    with read_tx(rt.engine) as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                select(jedi_logs.c.fileName).where(jedi_logs.c.modificationTime <= cutoff).limit(batch)
            )
        ]
    removed = 0
    directory = log_dir(rt)
    for name in names:
        with write_tx(rt.engine) as conn:
            gone = conn.execute(
                jedi_logs.delete().where(jedi_logs.c.fileName == name, jedi_logs.c.modificationTime <= cutoff)
            ).rowcount
        if gone:
            (directory / name).unlink(missing_ok=True)
            removed += 1
    return removed
