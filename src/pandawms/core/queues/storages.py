"""Which RSEs a queue reads from and writes to, and which queues can read an RSE.

The mapping lives in the queue definitions CRIC publishes (stored as they came, see
:mod:`pandawms.core.queues.catalogue`): ``astorages`` maps an activity to its RSEs (``read_lan``,
``read_wan``, ``write_lan``, ``write_wan``, the ``_analysis``/``_production`` variants, and
the pilot's ``pr``/``pw``/``pl`` for reading inputs and writing outputs and logs), and the older ``ddm`` field is a comma list
whose entries are read and whose first is written. Brokerage uses this to send a job where
its input is; output registration to know which RSE a pilot wrote to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import queues


@dataclass(frozen=True)
class QueueStorage:
    """The RSEs of one queue, in the order the definition lists them (first: preferred)."""

    queue: str
    read: tuple[str, ...]
    write: tuple[str, ...]


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return []
    return [str(item).strip() for item in items if isinstance(item, str) and item.strip()]


def _add(target: list[str], names: list[str]) -> None:
    for name in names:
        if name not in target:
            target.append(name)


def storage_of(name: str, definition: dict[str, Any]) -> QueueStorage:
    """The RSEs a queue definition names for reading and for writing."""
    read: list[str] = []
    write: list[str] = []
    astorages = definition.get("astorages")
    if isinstance(astorages, dict):
        # The pilot's activities first (pr: read inputs, pw: write outputs, pl: write logs),
        # then CRIC's read_*/write_* ones.
        _add(read, _names(astorages.get("pr")))
        _add(write, _names(astorages.get("pw")))
        _add(write, _names(astorages.get("pl")))
        for activity in sorted(astorages):
            if activity.startswith("read"):
                _add(read, _names(astorages[activity]))
            elif activity.startswith("write"):
                _add(write, _names(astorages[activity]))
    legacy = _names(definition.get("ddm"))
    _add(read, legacy)
    _add(write, legacy[:1])
    return QueueStorage(name, tuple(read), tuple(write))


def queue_storage(rt: Runtime, queue: str) -> QueueStorage | None:
    """The RSEs of queue ``queue``; None when no such queue is defined."""
    with read_tx(rt.engine) as conn:
        row = conn.execute(select(queues.c.data).where(queues.c.name == queue)).first()
    if row is None:
        return None
    return storage_of(queue, _definition(row[0]))


def queues_reading(rt: Runtime, rse: str, active_only: bool = True) -> list[str]:
    """Names of the queues that read ``rse`` (online/test/brokeroff and ACTIVE ones by default)."""
    found = []
    with read_tx(rt.engine) as conn:
        rows = list(conn.execute(select(queues.c.name, queues.c.status, queues.c.state, queues.c.data)))
    for name, status, state, data in rows:
        if active_only and (status == "offline" or (state or "ACTIVE").upper() != "ACTIVE"):
            continue
        if rse in storage_of(name, _definition(data)).read:
            found.append(name)
    return sorted(found)


def _definition(data: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(data) if isinstance(data, str | bytes) else data
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
