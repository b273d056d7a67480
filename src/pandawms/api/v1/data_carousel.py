"""``/api/v1/data_carousel/*``: operators' commands on staging requests, as the real server has them.

Every method takes ``request_id`` or ``dataset`` (``scope:name``; when both are given the id is
used), is a POST, and needs the production role over a secure connection, as on the real server.
A refusal (no such request, wrong status, no other RSE) is HTTP 200 with ``success: false`` and
the reason, as the real server answers.
"""

from __future__ import annotations

from pandawms.api.authz import PRODUCTION_WRITE
from pandawms.api.context import RequestContext
from pandawms.api.v1.registry import Result, V1Module
from pandawms.core.tasks import carousel_ops
from pandawms.core.tasks.commands import Reply

methods = V1Module("data_carousel")


def _reply(reply: Reply) -> Result:
    return reply.success, reply.message, reply.data


@methods.post("change_staging_destination", PRODUCTION_WRITE)
def change_staging_destination(
    ctx: RequestContext,
    *,
    request_id: int | None = None,
    dataset: str | None = None,
) -> Result:
    """End the request and stage its dataset again to another disk RSE (not a previous one)."""
    return _reply(carousel_ops.change_staging_destination(ctx.rt, request_id, dataset))


@methods.post("change_staging_source", PRODUCTION_WRITE)
def change_staging_source(
    ctx: RequestContext,
    *,
    request_id: int | None = None,
    dataset: str | None = None,
    cancel_fts: bool = False,
    change_src_expr: bool = False,
    source_rse: str | None = None,
) -> Result:
    """Another tape for a queued request; a staging request's rule source dropped or replaced."""
    return _reply(
        carousel_ops.change_staging_source(
            ctx.rt, request_id, dataset, cancel_fts, change_src_expr, source_rse
        )
    )


@methods.post("force_to_staging", PRODUCTION_WRITE)
def force_to_staging(
    ctx: RequestContext,
    *,
    request_id: int | None = None,
    dataset: str | None = None,
) -> Result:
    """Stage a queued request now, ahead of the limit of staging requests."""
    return _reply(carousel_ops.force_to_staging(ctx.rt, request_id, dataset))


@methods.post("retire_unused", PRODUCTION_WRITE)
def retire_unused(
    ctx: RequestContext,
    *,
    request_id: int | None = None,
    dataset: str | None = None,
) -> Result:
    """Retire a done request that no active task needs; its rule expires."""
    return _reply(carousel_ops.retire_unused(ctx.rt, request_id, dataset))
