"""Harvester instances and the worker statistics they report.

An instance says it is alive (with its version and start time) every few minutes; the server
records who runs it and from where. Each instance also reports, per queue, how many workers it
has by job type, resource type and worker status; a report replaces that instance's previous
one for the queue in one transaction, and readers see the sums of recent reports.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from sqlalchemy import func, select

from pandawms.core.links import check_harvester_id, check_name, clean_text
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_workers import harvester_instances as instances
from pandawms.db.schema_workers import harvester_worker_stats as stats
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from pandawms.model.values import BadValue, parse_datetime

#: Statistics older than this are left out of get_worker_statistics (as PanDA does).
STATS_WINDOW = dt.timedelta(hours=4)
_KNOWN = ("startTime", "sw_version", "commit_stamp", "description")


def _heartbeat_values(data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "startTime":
            text = raw[len("datetime/") :] if isinstance(raw, str) and raw.startswith("datetime/") else raw
            try:
                values["startTime"] = parse_datetime(text) if raw not in (None, "") else None
            except BadValue as exc:
                raise PandaError(f"Argument error: data.startTime is not a time ({exc})") from None
        elif key in _KNOWN:
            if raw is not None and not isinstance(raw, str | int | float):
                raise PandaError(f"Argument error: data.{key} must be a string")
            column = instances.c[key]
            values[key] = None if raw is None else clean_text(str(raw))[: column.type.length]  # type: ignore[attr-defined]
        else:
            extra[key] = raw
    if extra:
        text = orjson.dumps(extra, default=str).decode()
        if len(text) > 1024 * 1024:
            raise PandaError("Argument error: heartbeat data larger than 1 MiB", 413)
        values["attributes"] = text
    return values


def heartbeat(rt: Runtime, harvester_id: str, who: Identity, data: dict[str, Any] | None) -> bool:
    """Record that an instance is alive; True when it was already known."""
    check_harvester_id(harvester_id)
    values = {
        **_heartbeat_values(data or {}),
        "owner": (who.name or None) and clean_text(who.name)[:128],
        "hostName": (who.remote_host or None) and clean_text(who.remote_host)[:128],
        "lastUpdate": utcnow(),
    }
    with write_tx(rt.engine) as conn:
        known = conn.execute(
            instances.update().where(instances.c.harvesterID == harvester_id).values(**values)
        ).rowcount
        if not known:
            conn.execute(
                instances.insert().values(harvesterID=harvester_id, description="automatic", **values)
            )
    return bool(known)


def instance(rt: Runtime, harvester_id: str) -> dict[str, Any] | None:
    """The instance row, for operators and tests."""
    with read_tx(rt.engine) as conn:
        row = (
            conn.execute(select(instances).where(instances.c.harvesterID == harvester_id)).mappings().first()
        )
    return dict(row) if row else None


def _parse_stats(text: Any) -> list[tuple[str, str, str, int]]:
    """``{jobType: {resourceType: {status: n}}}`` (a JSON string) -> rows; "Undefined" types dropped."""
    try:
        tree = orjson.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise PandaError(f"Argument error: statistics is not valid JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise PandaError("Argument error: statistics must be {jobType: {resourceType: {status: count}}}")
    rows = []
    for job_type, by_resource in tree.items():
        if not isinstance(by_resource, dict):
            raise PandaError(f"Argument error: statistics[{job_type!r}] must be an object")
        for resource_type, by_status in by_resource.items():
            if not isinstance(by_status, dict):
                raise PandaError(
                    f"Argument error: statistics[{job_type!r}][{resource_type!r}] must be an object"
                )
            if resource_type == "Undefined":
                continue
            for status, count in by_status.items():
                if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**31:
                    raise PandaError(
                        f"Argument error: count of {job_type}/{resource_type}/{status} must be a "
                        f"non-negative integer, got {count!r}"
                    )
                names = (str(job_type), str(resource_type), str(status))
                for name, limit in zip(names, (32, 56, 16), strict=True):
                    check_name(f"statistics name {name[:40]!r}", name, limit)
                rows.append((*names, count))
    return rows


def report_stats(rt: Runtime, harvester_id: str, queue: str, text: Any) -> int:
    """Replace the instance's counts for ``queue``; returns the number of rows stored."""
    check_harvester_id(harvester_id)
    check_name("panda_queue", queue, 128)
    rows = _parse_stats(text)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        conn.execute(
            stats.delete().where(stats.c.harvesterID == harvester_id, stats.c.computingSite == queue)
        )
        if rows:
            conn.execute(
                stats.insert(),
                [
                    {
                        "harvesterID": harvester_id,
                        "computingSite": queue,
                        "jobType": job_type,
                        "resourceType": resource_type,
                        "status": status,
                        "n_workers": count,
                        "lastUpdate": now,
                    }
                    for job_type, resource_type, status, count in rows
                ],
            )
    return len(rows)


def worker_stats(rt: Runtime, now: dt.datetime | None = None) -> dict[str, Any]:
    """``{queue: {harvesterID: {jobType: {resourceType: {status: n}}}}}`` of recent reports."""
    since = (now or utcnow()) - STATS_WINDOW
    stmt = (
        select(
            stats.c.computingSite,
            stats.c.harvesterID,
            stats.c.jobType,
            stats.c.resourceType,
            stats.c.status,
            func.sum(stats.c.n_workers),
        )
        .where(stats.c.lastUpdate >= since)
        .group_by(
            stats.c.computingSite, stats.c.harvesterID, stats.c.jobType, stats.c.resourceType, stats.c.status
        )
    )
    out: dict[str, Any] = {}
    with read_tx(rt.engine) as conn:
        for site, harvester_id, job_type, resource_type, status, count in conn.execute(stmt):
            level = out.setdefault(site, {}).setdefault(harvester_id, {}).setdefault(job_type, {})
            level.setdefault(resource_type, {})[status] = int(count)
    return out
