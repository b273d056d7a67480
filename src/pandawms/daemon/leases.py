"""Fleet-wide exclusivity through lease rows in the shared database.

A node may run a fleet-wide task only while it holds the task's lease row. Taking the lease is
one conditional UPDATE (free or expired -> mine, until now + period), which the database
serialises, so of N daemons racing for it exactly one wins per period.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import daemon_leases


def try_acquire(rt: Runtime, task: str, owner: str, ttl: int, now: dt.datetime | None = None) -> bool:
    """Take the lease of ``task`` for ``ttl`` seconds if nobody holds a live one."""
    now = now or utcnow()
    until = now + dt.timedelta(seconds=ttl)
    table = daemon_leases
    with write_tx(rt.engine) as conn:
        taken = conn.execute(
            table.update()
            .where(table.c.task == task, or_(table.c.expires <= now, table.c.owner == owner))
            .values(owner=owner, expires=until, acquired=now)
        ).rowcount
    if taken:
        return True
    try:
        with write_tx(rt.engine) as conn:
            conn.execute(table.insert().values(task=task, owner=owner, expires=until, acquired=now))
        return True
    except IntegrityError:
        return False


def release(rt: Runtime, task: str, owner: str, keep_until: dt.datetime) -> None:
    """Shorten our lease to ``keep_until`` (the end of the period we ran in)."""
    table = daemon_leases
    with write_tx(rt.engine) as conn:
        conn.execute(
            table.update().where(table.c.task == task, table.c.owner == owner).values(expires=keep_until)
        )


def holders(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Every lease row by task."""
    with read_tx(rt.engine) as conn:
        return {row["task"]: dict(row) for row in conn.execute(select(daemon_leases)).mappings()}
