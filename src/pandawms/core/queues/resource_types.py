"""Resource types (SCORE, MCORE, SCORE_HIMEM, MCORE_HIMEM...): a small table operators edit.

Harvester's resource-type mapper and the pilot's memory monitor read these ranges to classify
workers and jobs by cores and memory per core. An empty table is seeded with PanDA's four usual
types on first read, so a new server answers with sensible values; ``pandawms resource-types``
lists and changes them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_meta import resource_types
from pandawms.model.errors import PandaError

_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,55}$")


@dataclass(frozen=True)
class ResourceType:
    """One type, with PanDA's column names; None means no bound."""

    resource_name: str
    mincore: int | None
    maxcore: int | None
    minrampercore: int | None
    maxrampercore: int | None


#: PanDA's usual types: one core or several, up to 2 GB per core or more.
DEFAULTS = (
    ResourceType("SCORE", 1, 1, None, 2000),
    ResourceType("MCORE", 2, None, None, 2000),
    ResourceType("SCORE_HIMEM", 1, 1, 2001, None),
    ResourceType("MCORE_HIMEM", 2, None, 2001, None),
)


def _read(rt: Runtime) -> list[ResourceType]:
    with read_tx(rt.engine) as conn:
        rows = conn.execute(select(resource_types).order_by(resource_types.c.resource_name)).mappings()
        return [ResourceType(**dict(r)) for r in rows]


def list_types(rt: Runtime) -> list[ResourceType]:
    """Every type, by name; the defaults are stored first when the table is empty."""
    found = _read(rt)
    if found:
        return found
    try:
        with write_tx(rt.engine) as conn:
            conn.execute(resource_types.insert(), [asdict(t) for t in DEFAULTS])
    except IntegrityError:
        pass  # another process seeded it at the same moment
    return _read(rt)


def as_dicts(rt: Runtime) -> list[dict[str, object]]:
    """The types as the real server sends them (Harvester and the pilot read these keys)."""
    return [asdict(t) for t in list_types(rt)]


def _check(value: int | None, what: str) -> int | None:
    if value is not None and not 0 <= value <= 10**7:
        raise PandaError(f"{what} must be between 0 and 10000000, got {value}")
    return value


def set_type(rt: Runtime, rtype: ResourceType) -> None:
    """Add or replace one type."""
    if not _NAME.match(rtype.resource_name):
        raise PandaError(
            f"resource type name {rtype.resource_name[:60]!r} must be upper-case letters, digits and _"
        )
    for lo, hi, what in (("mincore", "maxcore", "cores"), ("minrampercore", "maxrampercore", "RAM per core")):
        low, high = _check(getattr(rtype, lo), lo), _check(getattr(rtype, hi), hi)
        if low is not None and high is not None and low > high:
            raise PandaError(f"{what}: minimum {low} is above maximum {high}")
    list_types(rt)  # seed first, so setting one type does not hide the defaults
    with write_tx(rt.engine) as conn:
        conn.execute(resource_types.delete().where(resource_types.c.resource_name == rtype.resource_name))
        conn.execute(resource_types.insert().values(**asdict(rtype)))


def delete_type(rt: Runtime, name: str) -> bool:
    """Remove one type; False when there was none of that name."""
    list_types(rt)
    with write_tx(rt.engine) as conn:
        gone = conn.execute(resource_types.delete().where(resource_types.c.resource_name == name)).rowcount
    return bool(gone)
