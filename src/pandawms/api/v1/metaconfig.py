"""``/api/v1/metaconfig/*``: queue definitions, resource types and banned users."""

from __future__ import annotations

import orjson
from sqlalchemy import select

from pandawms.api.authz import ANYONE, USER
from pandawms.api.context import RequestContext
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.queues import resource_types
from pandawms.core.queues.catalogue import all_documents
from pandawms.db.engine import read_tx
from pandawms.db.schema import banned_users

methods = V1Module("metaconfig")


@methods.get("get_site_specs", ANYONE)
def get_site_specs(ctx: RequestContext, *, type: str | None = None) -> Result:
    """Queue definitions by name, optionally of one type (production, analysis, unified)."""

    body, _ = all_documents(ctx.rt)
    specs = orjson.loads(body)
    if type:
        specs = {name: spec for name, spec in specs.items() if spec.get("type") == type}
    return ok(specs)


@methods.get("get_resource_types", USER)
def get_resource_types(ctx: RequestContext) -> Result:
    """``[{resource_name, mincore, maxcore, minrampercore, maxrampercore}, ...]`` (Harvester's mapper)."""
    return ok(resource_types.as_dicts(ctx.rt))


@methods.get("get_banned_users", USER)
def get_banned_users(ctx: RequestContext) -> Result:
    """``{name: false}`` for every banned user, the real server's shape."""

    with read_tx(ctx.rt.engine) as conn:
        names = [row[0] for row in conn.execute(select(banned_users.c.name).order_by(banned_users.c.name))]
    return ok(dict.fromkeys(names, False))
