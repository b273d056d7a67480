"""Tasks as the monitor shows them: one task's record and progress, and task lists."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    func,
    select,
)

from pandawms.core.events.store import task_event_counts
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.carousel import list_requests
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_tasks import task_change_log, task_status_log, tasks
from pandawms.model.states import TERMINAL
from pandawms.monitor.queries.common import status_sort_key


def _task_rows(conn: Any, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Status, name and owner of the tasks the task layer knows (tasks submitted by prun...)."""

    if not task_ids:
        return {}
    stmt = select(tasks.c.jediTaskID, tasks.c.status, tasks.c.taskName, tasks.c.userName).where(
        tasks.c.jediTaskID.in_(list(task_ids))
    )
    return {int(r[0]): {"status": r[1], "taskName": r[2], "user": r[3]} for r in conn.execute(stmt)}


def task_detail(rt: Runtime, task_id: int) -> dict[str, Any] | None:
    """Jobs of one jediTaskID by status and queue (live and archived), with its progress."""
    by_status: dict[str, int] = defaultdict(int)
    by_queue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    users: set[str] = set()
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    with read_tx(rt.engine) as conn:
        for table in (jobs, jobs_archive):
            stmt = (
                select(
                    table.c.jobStatus,
                    table.c.computingSite,
                    table.c.prodUserName,
                    func.count(),
                    func.min(table.c.creationTime),
                    func.max(table.c.modificationTime),
                )
                .where(table.c.jediTaskID == task_id)
                .group_by(table.c.jobStatus, table.c.computingSite, table.c.prodUserName)
            )
            for status, site, user, n, created, modified in conn.execute(stmt):
                by_status[status] += int(n)
                by_queue[site or "(no queue)"][status] += int(n)
                if user:
                    users.add(user)
                if created is not None and (first is None or created < first):
                    first = created
                if modified is not None and (last is None or modified > last):
                    last = modified
        known = _task_rows(conn, [task_id]).get(task_id, {})
        history = task_history(conn, task_id)
        events = task_event_counts(conn, task_id)
    total = sum(by_status.values())
    if not total and not known:
        return None
    # A task waiting for its input (staging from tape, or not yet refined) has no job yet.
    final = sum(by_status.get(s, 0) for s in TERMINAL)
    share = max(total, 1)
    return {
        "jediTaskID": task_id,
        "total": total,
        "counts": dict(sorted(by_status.items(), key=lambda kv: status_sort_key(kv[0]))),
        "queues": {q: dict(c) for q, c in sorted(by_queue.items())},
        "users": sorted(users),
        "first_created": first,
        "last_modified": last,
        "finished_fraction": by_status.get("finished", 0) / share,
        "done_fraction": final / share,
        "failed_fraction": by_status.get("failed", 0) / share,
        "status": known.get("status"),
        "taskName": known.get("taskName"),
        "history": history,
        "staging": [r.as_dict() for r in list_requests(rt, task_id=task_id, limit=100)],
        "events": events,
    }


def task_history(conn: Any, task_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Status moves and operator changes of a task, newest first: what happened to it, and who did it."""

    moves = conn.execute(
        select(task_status_log)
        .where(task_status_log.c.jediTaskID == task_id)
        .order_by(task_status_log.c.id.desc())
        .limit(limit)
    ).mappings()
    entries = [
        {
            "time": r["modificationTime"],
            "what": "status",
            "old": r["oldStatus"],
            "new": r["status"],
            "by": None,
            "note": r["reason"],
        }
        for r in moves
    ]
    changes = conn.execute(
        select(task_change_log)
        .where(task_change_log.c.jediTaskID == task_id)
        .order_by(task_change_log.c.id.desc())
        .limit(limit)
    ).mappings()
    entries += [
        {
            "time": r["modificationTime"],
            "what": r["attribute"],
            "old": r["oldValue"],
            "new": r["newValue"],
            "by": r["changedBy"],
            "note": None,
        }
        for r in changes
    ]
    entries.sort(key=lambda e: e["time"], reverse=True)
    return entries[:limit]


def task_list(
    rt: Runtime, user: str | None = None, limit: int = 50, include_archive: bool = False
) -> list[dict[str, Any]]:
    """The ``limit`` most recent tasks (by their newest job) with their jobs by status."""
    order: list[int] = []
    seen: set[int] = set()
    tables = [jobs, jobs_archive] if include_archive else [jobs]
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    owners: dict[int, str] = {}
    with read_tx(rt.engine) as conn:
        for table in tables:
            stmt = select(table.c.jediTaskID).where(table.c.jediTaskID.is_not(None))
            if user:
                stmt = stmt.where(table.c.prodUserName == user)
            stmt = stmt.order_by(table.c.PandaID.desc()).limit(100 * limit)
            for (task_id,) in conn.execute(stmt):
                if task_id not in seen and len(order) < limit:
                    seen.add(task_id)
                    order.append(int(task_id))
        if not order:
            return []
        for table in tables:
            stmt2 = (
                select(table.c.jediTaskID, table.c.jobStatus, table.c.prodUserName, func.count())
                .where(table.c.jediTaskID.in_(order))
                .group_by(table.c.jediTaskID, table.c.jobStatus, table.c.prodUserName)
            )
            for task_id, status, owner, n in conn.execute(stmt2):
                counts[int(task_id)][status] += int(n)
                if owner:
                    owners[int(task_id)] = owner
        known = _task_rows(conn, order)
    out = []
    for task_id in sorted(order, reverse=True):
        c = counts[task_id]
        total = sum(c.values())
        out.append(
            {
                "jediTaskID": task_id,
                "user": owners.get(task_id),
                "total": total,
                "counts": dict(sorted(c.items(), key=lambda kv: status_sort_key(kv[0]))),
                "finished_fraction": (c.get("finished", 0) / total) if total else 0.0,
                "done_fraction": (sum(c.get(s, 0) for s in TERMINAL) / total) if total else 0.0,
                "status": known.get(task_id, {}).get("status"),
                "taskName": known.get(task_id, {}).get("taskName"),
            }
        )
    return out
