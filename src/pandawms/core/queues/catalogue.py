"""PanDA queues: loading CRIC's schedconfig JSON, and reading queue definitions.

A load is all or nothing: every entry is checked first, and a file with any bad entry is
refused with the list of reasons while the configuration in use stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import queues
from pandawms.model.errors import PandaError

STATUSES = ("online", "offline", "test", "brokeroff")
TYPES = ("production", "analysis", "unified", "special")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_QUEUES = 20000


@dataclass(frozen=True)
class Queue:
    """What brokerage and dispatch need of a queue."""

    name: str
    status: str
    state: str | None
    type: str | None
    corecount: int | None
    maxrss: int | None
    maxtime: int | None
    cloud: str | None
    site: str | None

    @property
    def active(self) -> bool:
        """CRIC's ``state`` ACTIVE (or unset) and not offline."""
        return (self.state or "ACTIVE").upper() == "ACTIVE" and self.status != "offline"


def _int_field(entry: dict[str, Any], key: str, name: str, errors: list[str]) -> int | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.append(f"{name}: {key} must be a whole number, got {value!r}")
        return None
    if number < 0 or number > 10**12:
        errors.append(f"{name}: {key} is out of range: {number}")
        return None
    return number


def parse_schedconfig(text: str | bytes) -> dict[str, tuple[Queue, dict[str, Any]]]:
    """Check a schedconfig JSON document: ``{queue: {...}}`` or a list of queue objects."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PandaError(f"queue file is not valid JSON: {exc}") from None
    if isinstance(doc, list):
        entries: dict[str, Any] = {}
        for index, item in enumerate(doc):
            if not isinstance(item, dict) or not (item.get("name") or item.get("nickname")):
                raise PandaError(f"queue file entry {index} must be an object with a name")
            entries[str(item.get("name") or item.get("nickname"))] = item
    elif isinstance(doc, dict):
        entries = doc
    else:
        raise PandaError("queue file must be a JSON object keyed by queue name, or a list of queues")
    if not entries:
        raise PandaError("queue file defines no queues")
    if len(entries) > MAX_QUEUES:
        raise PandaError(f"queue file defines {len(entries)} queues, more than {MAX_QUEUES}")
    errors: list[str] = []
    parsed: dict[str, tuple[Queue, dict[str, Any]]] = {}
    for name, entry in entries.items():
        if not _NAME.match(str(name)):
            errors.append(f"{name!r}: not a valid queue name")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{name}: definition must be an object")
            continue
        status = str(entry.get("status") or "online").lower()
        if status not in STATUSES:
            errors.append(f"{name}: status must be one of {', '.join(STATUSES)}, got {entry.get('status')!r}")
        qtype = entry.get("type")
        if qtype is not None and str(qtype) not in TYPES:
            errors.append(f"{name}: type must be one of {', '.join(TYPES)}, got {qtype!r}")
        queue = Queue(
            name=str(name),
            status=status,
            state=(str(entry["state"]).upper()[:16] if entry.get("state") else None),
            type=str(qtype) if qtype else None,
            corecount=_int_field(entry, "corecount", name, errors),
            maxrss=_int_field(entry, "maxrss", name, errors),
            maxtime=_int_field(entry, "maxtime", name, errors),
            cloud=str(entry.get("cloud"))[:50] if entry.get("cloud") else None,
            site=str(entry.get("atlas_site") or entry.get("site") or "")[:128] or None,
        )
        data = dict(entry)
        data.setdefault("name", queue.name)
        data.setdefault("nickname", queue.name)
        data.setdefault("panda_resource", queue.name)
        data["status"] = status
        data.setdefault("state", "ACTIVE")
        parsed[queue.name] = (queue, data)
    if errors:
        shown = "; ".join(errors[:20]) + (f"; and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise PandaError(f"queue file refused, configuration unchanged: {shown}")
    return parsed


def load_queues(rt: Runtime, text: str | bytes, replace: bool = True) -> str:
    """Store the queues of a schedconfig document; with ``replace`` drop queues it does not name."""
    parsed = parse_schedconfig(text)
    now = utcnow()
    rows = []
    for queue, data in parsed.values():
        body = json.dumps(data, sort_keys=True)
        rows.append(
            {
                "name": queue.name,
                "status": queue.status,
                "state": queue.state,
                "type": queue.type,
                "corecount": queue.corecount,
                "maxrss": queue.maxrss,
                "maxtime": queue.maxtime,
                "cloud": queue.cloud,
                "site": queue.site,
                "data": body,
                "etag": hashlib.sha1(body.encode()).hexdigest(),
                "updated": now,
            }
        )
    with write_tx(rt.engine) as conn:
        existing = {r[0]: r[1] for r in conn.execute(select(queues.c.name, queues.c.etag))}
        new = [r for r in rows if r["name"] not in existing]
        changed = [r for r in rows if r["name"] in existing and existing[r["name"]] != r["etag"]]
        gone = set(existing) - set(parsed) if replace else set()
        if new:
            conn.execute(queues.insert(), new)
        for row in changed:
            conn.execute(queues.update().where(queues.c.name == row["name"]).values(**row))
        if gone:
            conn.execute(queues.delete().where(queues.c.name.in_(sorted(gone))))
    rt.forget("queues")
    return f"{len(parsed)} queues: {len(new)} new, {len(changed)} changed, {len(gone)} removed"


def queue_document(rt: Runtime, name: str) -> tuple[str, str] | None:
    """(JSON text, etag) of one queue, as pilots fetch it; None when unknown."""
    with read_tx(rt.engine) as conn:
        row = conn.execute(select(queues.c.data, queues.c.etag).where(queues.c.name == name)).first()
    return None if row is None else (row[0], row[1])


def all_documents(rt: Runtime) -> tuple[str, str]:
    """(JSON text of every queue keyed by name, etag) for ``schedconfig.all.json``."""
    with read_tx(rt.engine) as conn:
        rows = list(conn.execute(select(queues.c.name, queues.c.data, queues.c.etag).order_by(queues.c.name)))
    body = "{" + ", ".join(f"{json.dumps(name)}: {data}" for name, data, _ in rows) + "}"
    etag = hashlib.sha1("".join(tag for _, _, tag in rows).encode()).hexdigest()
    return body, etag


_TTL = 30.0


def list_queues(rt: Runtime, fresh: bool = False) -> list[Queue]:
    """Every queue, remembered for a few seconds by the runtime (brokerage reads them per submission)."""
    hit = None if fresh else rt.remembered("queues", _TTL)
    if hit is not None:
        return list(hit)
    with read_tx(rt.engine) as conn:
        rows = conn.execute(select(queues).order_by(queues.c.name)).mappings()
        found = [
            Queue(
                r["name"],
                r["status"],
                r["state"],
                r["type"],
                r["corecount"],
                r["maxrss"],
                r["maxtime"],
                r["cloud"],
                r["site"],
            )
            for r in rows
        ]
    rt.remember("queues", found)
    return found
