"""Target slots of a queue: the job pressure operators ask brokerage to build there.

``harvester/add_target_slots`` sets ``numSlots`` for a queue, optionally for one global share
and one resource type, optionally for a number of days; -1 removes the target. Brokerage reads
the targets that have not expired (:func:`active_slots`) and, as the real brokerage does with a
queue's ``num_slots_map``, counts a queue as running at least ``numSlots / corecount`` jobs of
the job's share and resource type (:func:`standby_slots`), so jobs flow to a queue that is
about to have that many slots even before any of its jobs run.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Connection, or_, select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema_workers import harvester_slots
from pandawms.model.errors import PandaError

#: {queue: {gshare or None: {resource type or None: slots}}}
SlotMap = dict[str, dict[str | None, dict[str | None, int]]]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\- ]{0,127}$")
#: Most days a target may be set for.
MAX_DAYS = 3650


def _expiry(expiration_date: str | None, now: dt.datetime) -> dt.datetime | None:
    """The expiry: ``expiration_date`` is a number of days (as the real server reads it) or a date."""
    if expiration_date is None or not expiration_date.strip():
        return None
    text = expiration_date.strip()
    try:
        days = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise PandaError(
                f"Argument error: expiration_date must be a number of days or a date, got {text[:40]!r}"
            ) from None
        return (
            when.replace(tzinfo=None) if when.tzinfo is None else when.astimezone(dt.UTC).replace(tzinfo=None)
        )
    if not 0 <= days <= MAX_DAYS:
        raise PandaError(f"Argument error: expiration_date must be between 0 and {MAX_DAYS} days")
    return now + dt.timedelta(days=int(days))


def _checked(what: str, value: str | None, width: int) -> str:
    if value is None or value == "":
        return ""
    if len(value) > width or not _NAME.match(value):
        raise PandaError(f"Argument error: {what} {value[:40]!r} is not a valid name")
    return value


def set_slots(
    rt: Runtime,
    queue: str,
    slots: int,
    gshare: str | None,
    resource_type: str | None,
    expiration_date: str | None,
) -> str:
    """Set (or with -1 remove) a queue's target slots; the message the real server answers."""
    name = _checked("panda_queue", queue, 128)
    if not name:
        raise PandaError("Argument error: panda_queue must not be empty")
    share = _checked("global_share", gshare, 32)
    rtype = _checked("resource_type", resource_type, 56)
    if slots < -1 or slots > 10**9:
        raise PandaError("Argument error: slots must be -1 (remove) or between 0 and 10^9")
    now = utcnow()
    expiry = _expiry(expiration_date, now)
    key = (
        (harvester_slots.c.pandaQueueName == name)
        & (harvester_slots.c.gshare == share)
        & (harvester_slots.c.resourceType == rtype)
    )
    for _attempt in range(2):
        try:
            with write_tx(rt.engine) as conn:
                if slots == -1:
                    conn.execute(harvester_slots.delete().where(key))
                    break
                values = {"numSlots": slots, "modificationTime": now, "expirationTime": expiry}
                if not conn.execute(harvester_slots.update().where(key).values(**values)).rowcount:
                    conn.execute(
                        harvester_slots.insert().values(
                            pandaQueueName=name, gshare=share, resourceType=rtype, **values
                        )
                    )
            break
        except IntegrityError:
            continue  # another call inserted the same target first: update it
    return f"set numSlots={slots} for PQ={name} gshare={gshare or None} resource={resource_type or None}"


def active_slots(conn: Connection, queues: list[str], now: dt.datetime | None = None) -> SlotMap:
    """The unexpired targets of ``queues`` (targets below zero are ignored)."""
    if not queues:
        return {}
    now = now or utcnow()
    rows = conn.execute(
        select(
            harvester_slots.c.pandaQueueName,
            harvester_slots.c.gshare,
            harvester_slots.c.resourceType,
            harvester_slots.c.numSlots,
        ).where(
            harvester_slots.c.pandaQueueName.in_(queues[:10000]),
            or_(harvester_slots.c.expirationTime.is_(None), harvester_slots.c.expirationTime > now),
        )
    )
    found: SlotMap = {}
    for queue, share, rtype, slots in rows:
        if slots < 0:
            continue
        found.setdefault(queue, {}).setdefault(share or None, {})[rtype or None] = int(slots)
    return found


def standby_slots(
    targets: dict[str | None, dict[str | None, int]], gshare: str | None, rtype: str | None
) -> int | None:
    """The target for a job of ``gshare`` and ``rtype`` at one queue (the real getNumStandby).

    A target of the job's share, else of the whole queue; within it the job's resource type,
    else the whole-queue entry; no resource type asked: the sum. None when no target applies.
    """
    share: str | None = gshare
    if share not in targets:
        if None not in targets:
            return None
        share = None
    by_type = targets[share]
    if rtype is None:
        return sum(by_type.values())
    if rtype in by_type:
        return by_type[rtype]
    return by_type.get(None)


def list_slots(conn: Connection) -> list[dict[str, Any]]:
    """Every target, for the CLI and the monitor."""
    rows = conn.execute(select(harvester_slots).order_by(harvester_slots.c.pandaQueueName)).mappings()
    return [dict(r) for r in rows]
