"""Smaller pbook calls about a task: its jobs' user metadata, its parent, lost-file recovery.

``get_user_job_metadata`` reads the job reports (``metaData``) of the task's finished user jobs;
``get_parent_detailed_info`` resolves a retried or chained task's parent; a lost-file recovery
request is stored for the service that acts on it (a data management system: there is none in
pandawms, so requests wait in ``file_recovery_requests`` until an operator's tool takes them).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, union_all

from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.read import detailed_info, task_row
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import job_metadata, jobs, jobs_archive
from pandawms.db.schema_user import file_recovery_requests
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_act

#: Most job reports returned at once (each can be large).
MAX_METADATA_JOBS = 5000
#: Pending recovery requests a user may have at once.
MAX_PENDING_RECOVERIES = 20


def user_job_metadata(rt: Runtime, task_id: int, who: Identity) -> tuple[bool, str, dict[str, Any]]:
    """{PandaID: job report} of the task's finished user jobs whose report is JSON."""
    with read_tx(rt.engine) as conn:
        task = task_row(conn, task_id)
        if task is None:
            return False, f"jediTaskID={task_id} not found", {}
        if not may_act(who, task, rt.settings.auth_mode == "open"):
            return False, "not the task owner or no production role", {}
        finished = union_all(
            select(jobs.c.PandaID).where(
                jobs.c.jediTaskID == task_id, jobs.c.jobStatus == "finished", jobs.c.prodSourceLabel == "user"
            ),
            select(jobs_archive.c.PandaID).where(
                jobs_archive.c.jediTaskID == task_id,
                jobs_archive.c.jobStatus == "finished",
                jobs_archive.c.prodSourceLabel == "user",
            ),
        ).subquery()
        rows = conn.execute(
            select(job_metadata.c.PandaID, job_metadata.c.metaData)
            .where(job_metadata.c.PandaID.in_(select(finished.c.PandaID)))
            .order_by(job_metadata.c.PandaID)
            .limit(MAX_METADATA_JOBS)
        ).all()
    found: dict[str, Any] = {}
    for panda_id, text in rows:
        try:
            found[str(panda_id)] = json.loads(text)
        except (TypeError, ValueError):
            continue  # a report that is not JSON is skipped, as on the real server
    if not found:
        return True, "No metadata found", {}
    return True, "", found


def parent_detailed_info(rt: Runtime, task_id: int) -> tuple[bool, str, dict[str, Any] | None]:
    """The parent task of ``task_id`` as pbook shows a task, or why there is none."""
    with read_tx(rt.engine) as conn:
        child = task_row(conn, task_id)
    if child is None:
        return False, "Child task not found", None
    parent_id = child.get("parent_tid")
    if parent_id in (None, task_id):
        return False, "No parent task found", None
    found = detailed_info(rt, int(parent_id))
    if found is None:
        return False, "Parent task not found", None
    return True, "", found


def request_file_recovery(rt: Runtime, task_id: int, dry_run: bool, who: Identity) -> tuple[bool, str, Any]:
    """Store a lost-file recovery request for the task; refused for another user's task."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = task_row(conn, task_id)
        if task is None:
            return False, f"jediTaskID={task_id} not found", None
        if not may_act(who, task, rt.settings.auth_mode == "open"):
            return False, "not the task owner or no production role", None
        pending = conn.execute(
            select(file_recovery_requests.c.requestID).where(
                file_recovery_requests.c.userName == who.name, file_recovery_requests.c.status == "pending"
            )
        ).all()
        if len(pending) >= MAX_PENDING_RECOVERIES:
            return False, f"you already have {len(pending)} recovery requests waiting; try again later", None
        result = conn.execute(
            file_recovery_requests.insert().values(
                jediTaskID=task_id,
                userName=who.name,
                dn=who.dn or None,
                dryRun=1 if dry_run else 0,
                isProductionManager=1 if who.is_production else 0,
                status="pending",
                creationTime=now,
                modificationTime=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        request_id = int(key[0])
    return (
        True,
        "The request was accepted and will be processed in a few minutes",
        {"requestID": request_id},
    )
