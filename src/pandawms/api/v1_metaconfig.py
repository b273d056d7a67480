"""The v1 ``metaconfig/*`` methods beyond queue definitions: resource types and banned users."""

from __future__ import annotations

from sqlalchemy import select

from pandawms.api.context import RequestContext
from pandawms.api.v1 import Result, ok, v1
from pandawms.core.queues import resource_types


@v1("metaconfig", "get_resource_types", "GET")
def get_resource_types(ctx: RequestContext) -> Result:
    """``[{resource_name, mincore, maxcore, minrampercore, maxrampercore}, ...]`` (Harvester's mapper)."""
    return ok(resource_types.as_dicts(ctx.rt))


@v1("metaconfig", "get_banned_users", "GET")
def get_banned_users(ctx: RequestContext) -> Result:
    """``{name: false}`` for every banned user, the real server's shape."""
    from pandawms.db.engine import read_tx
    from pandawms.db.schema import banned_users

    with read_tx(ctx.rt.engine) as conn:
        names = [row[0] for row in conn.execute(select(banned_users.c.name).order_by(banned_users.c.name))]
    return ok(dict.fromkeys(names, False))
