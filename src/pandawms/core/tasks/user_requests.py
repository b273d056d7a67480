"""Workflow and event-picking requests, stored for the services that act on them.

``file_server/upload_workflow_request`` (a workflow description, for the workflow processor)
and ``file_server/upload_event_picking_request`` (runs and events to pick, for the event picker)
leave a request that a service takes later, as the real server leaves a file in its cache
directory. Here each is a row of ``user_requests`` in state ``pending`` holding the same fields
as JSON; :func:`take_pending` is how a consuming service claims them. Requests are bounded in
size and in how many one user may leave waiting, so no user can fill the database.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema_user import user_requests
from pandawms.model.errors import Declined, PandaError, TooLarge
from pandawms.model.identity import Identity

WORKFLOW = "workflow"
EVENT_PICKING = "event_picking"
#: Largest run/event list (the real server's limit for the whole request).
EVENT_PICKING_MAX_BYTES = 10 * 1024 * 1024
#: Largest workflow description.
WORKFLOW_MAX_BYTES = 4 * 1024 * 1024
#: Requests of one kind a user may have waiting at once.
MAX_PENDING_PER_USER = 50


class TooManyPending(Declined):
    """The user already has :data:`MAX_PENDING_PER_USER` requests of this kind waiting."""


def _store(rt: Runtime, who: Identity, kind: str, payload: dict[str, Any]) -> int:
    now = utcnow()
    text = json.dumps(payload)
    with write_tx(rt.engine) as conn:
        waiting = conn.execute(
            select(func.count()).where(
                user_requests.c.kind == kind,
                user_requests.c.userName == who.name[:128],
                user_requests.c.status == "pending",
            )
        ).scalar_one()
        if waiting >= MAX_PENDING_PER_USER:
            raise TooManyPending(f"you already have {waiting} {kind} requests waiting; try again later")
        result = conn.execute(
            user_requests.insert().values(
                kind=kind,
                userName=who.name[:128],
                dn=(who.dn or None) and who.dn[:250],
                status="pending",
                payload=text,
                creationTime=now,
                modificationTime=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def store_workflow(rt: Runtime, who: Identity, data: str) -> int:
    """Leave a workflow description (JSON text) for the workflow processor; the request's ID."""
    if len(data.encode()) > WORKFLOW_MAX_BYTES:
        raise TooLarge(f"workflow request is too large: at most {WORKFLOW_MAX_BYTES} bytes")
    try:
        description = json.loads(data)
    except ValueError as exc:
        raise PandaError(f"Cannot upload the workflow request: data is not JSON ({exc})") from None
    payload = {
        "userName": who.dn or who.name,
        "creationTime": utcnow().strftime("%Y-%m-%d %H:%M:%S"),
        "data": description,
    }
    return _store(rt, who, WORKFLOW, payload)


def parse_run_events(
    run_event_list: str, include_guids: bool
) -> tuple[list[list[str]], dict[str, list[str]]]:
    """``[[run, event], ...]`` and, with GUIDs, ``{"run,event": [guid]}`` from the user's lines.

    Each line is ``run event`` (or ``run event guid``); other lines are skipped, as the real
    server skips them.
    """
    width = 3 if include_guids else 2
    pairs: list[list[str]] = []
    guids: dict[str, list[str]] = {}
    for line in run_event_list.split("\n"):
        items = line.split()
        if len(items) != width:
            continue
        pairs.append([items[0], items[1]])
        if include_guids:
            guids[f"{items[0]},{items[1]}"] = [items[2]]
    return pairs, guids


def store_event_picking(
    rt: Runtime, who: Identity, fields: dict[str, str], run_event_list: str, include_guids: bool
) -> int:
    """Leave an event-picking request for the event picker; the request's ID."""
    size = len(run_event_list.encode()) + sum(len(v.encode()) for v in fields.values())
    if size > EVENT_PICKING_MAX_BYTES:
        raise TooLarge(
            f"ERROR: Run/event list is too large. Exceeded size limit {size}>{EVENT_PICKING_MAX_BYTES}."
        )
    pairs, guids = parse_run_events(run_event_list, include_guids)
    payload: dict[str, Any] = {
        "userName": who.dn or who.name,
        "creationTime": utcnow().strftime("%Y-%m-%d %H:%M:%S"),
        **fields,
        "runEvent": pairs,
        "runEvtGuidMap": guids,
    }
    return _store(rt, who, EVENT_PICKING, payload)


def take_pending(rt: Runtime, kind: str, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
    """Claim up to ``limit`` pending requests of ``kind`` (they become ``taken``): what a
    consuming service calls; (requestID, request) pairs, oldest first."""
    with write_tx(rt.engine) as conn:
        rows = conn.execute(
            select(user_requests.c.requestID, user_requests.c.payload)
            .where(user_requests.c.kind == kind, user_requests.c.status == "pending")
            .order_by(user_requests.c.requestID)
            .limit(limit)
        ).all()
        ids = [int(r[0]) for r in rows]
        if ids:
            conn.execute(
                user_requests.update()
                .where(user_requests.c.requestID.in_(ids), user_requests.c.status == "pending")
                .values(status="taken", modificationTime=utcnow())
            )
    return [(int(r[0]), json.loads(r[1])) for r in rows]
