"""Queues as the monitor shows them: state, counts and the last pilot activity."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    select,
)

from pandawms.core.queues.catalogue import Queue
from pandawms.core.queues.slots import active_slots
from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, queues
from pandawms.monitor.codes import ERROR_COLUMNS, summary
from pandawms.monitor.queries.common import LIST_COLUMNS, PILOT_SEEN, status_sort_key
from pandawms.monitor.queries.summary import count_live, live_summary


def queue_row(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(queues).where(queues.c.name == name)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    try:
        out["data"] = json.loads(out["data"])
    except (TypeError, ValueError):
        pass
    return out


def queue_obj(row: dict[str, Any]) -> Queue:
    return Queue(
        row["name"],
        row["status"],
        row["state"],
        row["type"],
        row["corecount"],
        row["maxrss"],
        row["maxtime"],
        row["cloud"],
        row["site"],
    )


def last_pilot_activity(
    conn: Connection, site: str, counts: dict[str, int] | None = None
) -> dt.datetime | None:
    """Newest modificationTime of the site's jobs in statuses pilots set: the last heartbeat seen.

    One max() per status over the dispatch index's (site, status) range. There is deliberately no
    index on modificationTime (heartbeats stay HOT updates on PostgreSQL), so walking one from
    the newest end is not an option: sorting a status's jobs took 4x longer at 1M jobs.
    """
    if counts is None:
        counts = {st: n for (_, st), n in count_live(conn, queue=site).items()}
    newest: dt.datetime | None = None
    for status in PILOT_SEEN:
        if not counts.get(status, 0):
            continue
        stmt = select(func.max(jobs.c.modificationTime)).where(
            jobs.c.computingSite == site, jobs.c.jobStatus == status
        )
        value = conn.execute(stmt).scalar()
        if value is not None and (newest is None or value > newest):
            newest = value
    return newest


def queue_list(rt: Runtime) -> list[dict[str, Any]]:
    """Every defined queue (and every queue name live jobs use) with its live counts."""
    s = live_summary(rt)
    by_queue = s.by_queue()
    with read_tx(rt.engine) as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(
                    queues.c.name,
                    queues.c.status,
                    queues.c.state,
                    queues.c.type,
                    queues.c.corecount,
                    queues.c.maxrss,
                    queues.c.maxtime,
                    queues.c.updated,
                ).order_by(queues.c.name)
            ).mappings()
        ]
    known = {r["name"] for r in rows}
    for name in by_queue:
        if name not in known and name != "(no queue)":
            rows.append({"name": name, "status": "undefined", "state": None, "type": None})
    for row in rows:
        counts = by_queue.get(row["name"], {})
        row["counts"] = counts
        row["total"] = sum(counts.values())
    rows.sort(key=lambda r: r["name"])
    return rows


def queue_detail(rt: Runtime, name: str, failures: int = 10) -> dict[str, Any] | None:
    """One queue: definition, live counts by status, last heartbeat seen, recent failures."""
    with read_tx(rt.engine) as conn:
        definition = queue_row(conn, name)
        counts = {st: n for (_, st), n in count_live(conn, queue=name).items()}
        if definition is None and not counts:
            return None
        last = last_pilot_activity(conn, name, counts)
        targets = active_slots(conn, [name]).get(name, {})
        recent = [
            dict(r)
            for r in conn.execute(
                select(*[jobs.c[c] for c in LIST_COLUMNS])
                .where(jobs.c.computingSite == name, jobs.c.jobStatus == "failed")
                .order_by(jobs.c.PandaID.desc())
                .limit(failures)
            ).mappings()
        ]
    for row in recent:
        row["error"] = summary(row)
        for col in ERROR_COLUMNS:
            row.pop(col, None)
    reason = None
    if definition is not None:
        queue = queue_obj(definition)
        if not queue.active or queue.status in ("brokeroff", "test"):
            reason = f"status {queue.status}, state {queue.state or 'ACTIVE'}: pilots get no ordinary jobs"
    return {
        "name": name,
        "defined": definition is not None,
        "definition": definition,
        "counts": dict(sorted(counts.items(), key=lambda kv: status_sort_key(kv[0]))),
        "total": sum(counts.values()),
        "last_heartbeat": last,
        "inactive_reason": reason,
        "recent_failures": recent,
        #: Target slots brokerage counts (harvester/add_target_slots); None: the whole queue.
        "target_slots": [
            {"gshare": share, "resourceType": rtype, "numSlots": n}
            for share, by_type in targets.items()
            for rtype, n in by_type.items()
        ],
    }
