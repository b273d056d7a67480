"""The one place a task's status changes.

:func:`move_task` checks the move against :data:`pandawms.model.task_states.ALLOWED_MOVES`,
writes it with a guard on the old status (a concurrent change is detected, never overwritten),
stamps the times and superStatus, and appends the task status log, all in the caller's
transaction: a refused move rolls everything back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from pandawms.db.schema_tasks import task_status_log, tasks
from pandawms.model.errors import Conflict
from pandawms.model.task_states import FINAL, TaskStatus, check_move, super_status


class TaskChangedConcurrently(Conflict):
    """Another request moved the task between our read and our write."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} changed concurrently; try again")


def lock_task(conn: Connection, task_id: int, skip_locked: bool = False) -> dict[str, Any] | None:
    """Read a task row for update (row lock where the backend has one); None when unknown.

    With ``skip_locked`` a task another transaction holds is skipped (None) instead of waited for.
    """
    stmt = select(tasks).where(tasks.c.jediTaskID == task_id)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update(skip_locked=skip_locked)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def log_task_status(
    conn: Connection, task_id: int, status: str, old: str | None, now: dt.datetime, reason: str | None
) -> None:
    """Append one row to the task status log."""
    conn.execute(
        task_status_log.insert().values(
            jediTaskID=task_id,
            modificationTime=now,
            status=status,
            oldStatus=old,
            reason=(reason or "")[:250] or None,
        )
    )


def move_task(
    conn: Connection,
    task: Mapping[str, Any],
    new: str,
    now: dt.datetime,
    values: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Move ``task`` (a row with jediTaskID and status) to ``new`` in the caller's transaction."""
    old = task["status"]
    task_id = int(task["jediTaskID"])
    check_move(old, new, task_id)
    update: dict[str, Any] = {
        **(values or {}),
        "status": new,
        "oldStatus": old,
        "superStatus": super_status(new),
        "modificationTime": now,
        "stateChangeTime": now,
    }
    if TaskStatus(new) in FINAL:
        update.setdefault("endTime", now)
    elif new in (TaskStatus.READY, TaskStatus.RUNNING):
        update["endTime"] = None
    if new == TaskStatus.RUNNING and not task.get("startTime"):
        update["startTime"] = now
    count = conn.execute(
        tasks.update().where(tasks.c.jediTaskID == task_id, tasks.c.status == old).values(**update)
    ).rowcount
    if count != 1:
        raise TaskChangedConcurrently(task_id)
    log_task_status(conn, task_id, new, old, now, reason)
