"""Asynchronous requests to the server machines: a grep of their logs, a sleep-and-echo probe.

An operator asks (``async_process/submit_*``), the request is stored with the machines expected
to answer, the daemon of each of those machines claims and runs it
(:mod:`pandawms.core.ops.async_processor`), and the operator polls the results
(``async_process/get_result``). As on the real server:

- a request names a service (every alive machine of it answers), one machine, or "any" machine
  of a service (exactly one answers, in one shared result row);
- a machine is alive when its daemon sent a heartbeat within :data:`ALIVE_MINUTES`;
- results are read by the requester only (``owner``), by the requester or production
  (``production``), or by anyone (``anyone``);
- a claim that dies (its daemon stopped) is retried up to :data:`MAX_ATTEMPTS` times, and
  requests are forgotten after :data:`RETENTION_DAYS`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_async import async_requests, async_results, machine_heartbeat
from pandawms.model.errors import Forbidden, NotFound
from pandawms.model.identity import Identity

#: The machine_name of a request any one machine of the service may run.
ANY_MACHINE = "any"
ALIVE_MINUTES = 60
MAX_ATTEMPTS = 3
RETENTION_DAYS = 7
ACCESS_LEVELS = ("owner", "production", "anyone")
#: Largest result (stdout, stderr) kept, in characters.
MAX_RESULT = 1_000_000
_TERMINAL = ("done", "failed")


def heartbeat(rt: Runtime, machine: str, service: str) -> None:
    """Record that ``machine`` runs ``service`` now."""
    now = utcnow()
    for _attempt in range(2):
        try:
            with write_tx(rt.engine) as conn:
                changed = conn.execute(
                    machine_heartbeat.update()
                    .where(machine_heartbeat.c.machine_name == machine)
                    .values(service_name=service, last_seen=now)
                ).rowcount
                if not changed:
                    conn.execute(
                        machine_heartbeat.insert().values(
                            machine_name=machine, service_name=service, last_seen=now
                        )
                    )
            return
        except IntegrityError:
            continue


def alive_machines(rt: Runtime, service: str, within_minutes: int = ALIVE_MINUTES) -> list[str]:
    """Machines of ``service`` heard from within ``within_minutes``."""
    since = utcnow() - dt.timedelta(minutes=within_minutes)
    with read_tx(rt.engine) as conn:
        rows = conn.execute(
            select(machine_heartbeat.c.machine_name)
            .where(machine_heartbeat.c.service_name == service, machine_heartbeat.c.last_seen >= since)
            .order_by(machine_heartbeat.c.machine_name)
        )
        return [str(r[0]) for r in rows]


def submit(
    rt: Runtime,
    who: Identity,
    request_type: str,
    parameters: dict[str, Any],
    service: str | None,
    machine: str | None,
    expected: list[str],
    access: str = "owner",
) -> str:
    """Store a request; its ID. Requests older than :data:`RETENTION_DAYS` go at the same time."""
    assert access in ACCESS_LEVELS
    request_id = str(uuid.uuid4())
    if machine == ANY_MACHINE:
        expected = [ANY_MACHINE]
    stored = {**parameters, "requester": who.name, "access": access}
    now = utcnow()
    with write_tx(rt.engine) as conn:
        conn.execute(
            async_requests.insert().values(
                request_id=request_id,
                request_type=request_type,
                service_name=service,
                machine_name=machine,
                parameters=json.dumps(stored),
                expected_machines=json.dumps(expected),
                created_at=now,
            )
        )
        _prune(conn, now)
    return request_id


def _prune(conn: Any, now: dt.datetime) -> None:
    old = select(async_requests.c.request_id).where(
        async_requests.c.created_at < now - dt.timedelta(days=RETENTION_DAYS)
    )
    conn.execute(async_results.delete().where(async_results.c.request_id.in_(old)))
    conn.execute(
        async_requests.delete().where(async_requests.c.created_at < now - dt.timedelta(days=RETENTION_DAYS))
    )


def _may_read(who: Identity, parameters: dict[str, Any]) -> bool:
    requester = parameters.get("requester")
    access = parameters.get("access", "owner")
    if access == "owner":
        return bool(requester) and who.name == requester
    if access == "production":
        return (bool(requester) and who.name == requester) or who.is_production
    return access == "anyone"


def result(rt: Runtime, who: Identity, request_id: str) -> dict[str, Any]:
    """What ``async_process/get_result`` answers: overall status, expected machines, results."""
    with read_tx(rt.engine) as conn:
        row = (
            conn.execute(select(async_requests).where(async_requests.c.request_id == request_id[:36]))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"request_id '{request_id[:40]}' not found")
        try:
            parameters = json.loads(row["parameters"] or "{}")
        except ValueError:
            parameters = {}
        if not _may_read(who, parameters):
            raise Forbidden(
                f"'{who.name}' is not authorized to read results "
                f"(access='{parameters.get('access', 'owner')}', requester='{parameters.get('requester')}')"
            )
        results = [
            dict(r)
            for r in conn.execute(
                select(
                    async_results.c.machine_name,
                    async_results.c.status,
                    async_results.c.result,
                    async_results.c.truncated,
                    async_results.c.error_msg,
                    async_results.c.attempts,
                    async_results.c.started_at,
                    async_results.c.finished_at,
                    async_results.c.stderr,
                    async_results.c.return_code,
                )
                .where(async_results.c.request_id == row["request_id"])
                .order_by(async_results.c.machine_name)
            ).mappings()
        ]
    expected = json.loads(row["expected_machines"] or "[]")
    answered = {r["machine_name"] for r in results if r["status"] in _TERMINAL}
    for entry in results:
        for key in ("started_at", "finished_at"):
            if entry[key] is not None:
                entry[key] = str(entry[key])
    overall = "complete" if expected and set(expected) <= answered else "pending"
    return {"overall_status": overall, "expected_machines": expected, "results": results}


def pending_for(rt: Runtime, machine: str, service: str, types: list[str]) -> list[dict[str, Any]]:
    """Requests ``machine`` (of ``service``) should run: not yet claimed by it, or to retry."""
    if not types:
        return []

    def open_for(result_machine: Any) -> Any:
        row = async_results.alias()
        claimed = exists().where(
            row.c.request_id == async_requests.c.request_id, row.c.machine_name == result_machine
        )
        retry = exists().where(
            row.c.request_id == async_requests.c.request_id,
            row.c.machine_name == result_machine,
            row.c.status == "pending",
        )
        return or_(~claimed, retry)

    mine = or_(async_requests.c.machine_name == machine, async_requests.c.service_name == service)
    stmt = (
        select(async_requests)
        .where(
            async_requests.c.request_type.in_(types),
            mine,
            or_(
                and_(
                    or_(
                        async_requests.c.machine_name.is_(None), async_requests.c.machine_name != ANY_MACHINE
                    ),
                    # a request for one named machine is not for its service's other machines
                    or_(async_requests.c.machine_name.is_(None), async_requests.c.machine_name == machine),
                    open_for(machine),
                ),
                and_(async_requests.c.machine_name == ANY_MACHINE, open_for(ANY_MACHINE)),
            ),
        )
        .order_by(async_requests.c.created_at)
        .limit(100)
    )
    with read_tx(rt.engine) as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def claim(rt: Runtime, request_id: str, result_machine: str) -> bool:
    """Take a request for ``result_machine``; False when another claim won."""
    now = utcnow()
    key = and_(async_results.c.request_id == request_id, async_results.c.machine_name == result_machine)
    try:
        with write_tx(rt.engine) as conn:
            status = conn.execute(select(async_results.c.status).where(key)).scalar()
            if status is None:
                conn.execute(
                    async_results.insert().values(
                        request_id=request_id,
                        machine_name=result_machine,
                        status="running",
                        attempts=1,
                        truncated=0,
                        started_at=now,
                    )
                )
                return True
            if status != "pending":
                return False
            taken = conn.execute(
                async_results.update()
                .where(key, async_results.c.status == "pending")
                .values(
                    status="running",
                    attempts=async_results.c.attempts + 1,
                    started_at=now,
                    finished_at=None,
                )
            ).rowcount
            return bool(taken)
    except IntegrityError:
        return False


def finish(
    rt: Runtime,
    request_id: str,
    result_machine: str,
    status: str,
    output: str | None = None,
    error: str | None = None,
    stderr: str | None = None,
    return_code: int | None = None,
) -> None:
    """Record a run's outcome (``done`` or ``failed``), cut to :data:`MAX_RESULT` characters."""
    truncated = len(output or "") > MAX_RESULT or len(stderr or "") > MAX_RESULT
    with write_tx(rt.engine) as conn:
        conn.execute(
            async_results.update()
            .where(async_results.c.request_id == request_id, async_results.c.machine_name == result_machine)
            .values(
                status=status,
                result=None if output is None else output[:MAX_RESULT],
                stderr=None if stderr is None else stderr[:MAX_RESULT],
                error_msg=None if error is None else error[:4000],
                return_code=return_code,
                truncated=1 if truncated else 0,
                finished_at=utcnow(),
            )
        )


def recover_stale(rt: Runtime, result_machine: str, max_seconds: int) -> int:
    """Runs of ``result_machine`` older than ``max_seconds``: retried, or failed after
    :data:`MAX_ATTEMPTS`; how many."""
    now = utcnow()
    stale = and_(
        async_results.c.machine_name == result_machine,
        async_results.c.status == "running",
        async_results.c.started_at < now - dt.timedelta(seconds=max_seconds),
    )
    with write_tx(rt.engine) as conn:
        retried = conn.execute(
            async_results.update()
            .where(stale, async_results.c.attempts < MAX_ATTEMPTS)
            .values(status="pending", finished_at=None)
        ).rowcount
        failed = conn.execute(
            async_results.update()
            .where(stale, async_results.c.attempts >= MAX_ATTEMPTS)
            .values(status="failed", error_msg="max retries exceeded", finished_at=now)
        ).rowcount
    return int(retried) + int(failed)
