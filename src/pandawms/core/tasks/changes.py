"""Operator changes of a task's settings: priority, attributes, split rule, site, share, cloning.

These are JEDI's task "commands" that change what a task is rather than where it is in its
life: each one checks who asks (the owner, a production or manager identity), changes the task
row (and the stored parameters, from which new jobs are made, where the setting lives there),
carries the change to the task's queued jobs where JEDI does, and writes one row per changed
setting to ``task_change_log`` in the same transaction, which the monitor's task page shows.
Answers keep the real server's shapes: a JEDI code in ``data`` (0 done, 2 unknown task, 3 not
allowed, 4 not possible now) or, for the ``change_*`` methods, ``"<n> tasks changed"``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from pandawms.core.events.store import has_event_ranges
from pandawms.core.jobs.kill import kill_jobs
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.commands import BAD_STATUS, NOT_FOUND, NOT_OWNER, OK, Reply
from pandawms.core.tasks.transitions import lock_task
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_tasks import task_change_log, task_datasets, task_params, tasks
from pandawms.model.event_states import USE_JUMBO_OFF, USE_JUMBO_ON
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_act
from pandawms.model.shares import parse_shares
from pandawms.model.task_states import ACTIVE, FINAL, TaskStatus

#: Attributes task/change_attribute may set (JEDI's list) and the task column of each.
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "ramCount": "ramCount",
    "wallTime": "walltime",
    "cpuTime": "cpuTime",
    "coreCount": "coreCount",
}
#: Where a changed attribute lives in the stored task parameters (new jobs are made from them).
_PARAM_KEYS = {"ramCount": "ramCount", "wallTime": "maxWalltime", "coreCount": "coreCount"}
#: Largest value change_attribute accepts for each attribute (MB, seconds, seconds, cores).
ATTRIBUTE_LIMITS = {"ramCount": 10**7, "wallTime": 10**8, "cpuTime": 10**9, "coreCount": 1024}
#: Split-rule attributes the real server lets operators change.
SPLIT_RULE_ATTRIBUTES = (
    "AI", "TW", "EC", "ES", "MF", "NG", "NI", "NF", "NJ", "AV", "IL", "LI", "LC", "CC", "OT", "UZ",
)  # fmt: skip
#: Priorities outside this range are refused (the submission check uses the same bounds).
MAX_PRIORITY = 10**6
#: change_modification_time accepts at most a year either way.
MAX_HOUR_OFFSET = 24 * 366
#: Job statuses in which a job has not reached a pilot: its queue or priority may still change.
QUEUED_JOB_STATUSES = ("pending", "defined", "assigned", "waiting", "throttled", "activated")
#: Job statuses of unfinished jobs.
UNFINISHED_JOB_STATUSES = (
    *QUEUED_JOB_STATUSES,
    "sent",
    "starting",
    "running",
    "holding",
    "transferring",
    "merging",
)
#: Kill code for jobs ended because their task was reassigned (JEDI's 51).
KILL_REASSIGNED = 51
#: Job-cloning modes JEDI knows.
CLONING_MODES = ("runonce", "storeonce")


def _changed(n: int) -> str:
    return f"{n} tasks changed"


def log_change(
    conn: Connection, task_id: int, attribute: str, old: Any, new: Any, who: Identity, now: dt.datetime
) -> None:
    """Append one row to the task's change log (in the caller's transaction)."""
    conn.execute(
        task_change_log.insert().values(
            jediTaskID=task_id,
            modificationTime=now,
            attribute=attribute[:64],
            oldValue=None if old is None else str(old)[:250],
            newValue=None if new is None else str(new)[:250],
            changedBy=(who.name or who.dn or "")[:128] or None,
        )
    )


def _load(conn: Connection, rt: Runtime, task_id: int, who: Identity) -> dict[str, Any] | Reply:
    task = lock_task(conn, task_id)
    if task is None:
        return Reply(False, "Task not found", NOT_FOUND)
    if not may_act(who, task, rt.settings.auth_mode == "open"):
        return Reply(False, "not the task owner or no production role", NOT_OWNER)
    return task


def _set(
    conn: Connection,
    task: Mapping[str, Any],
    values: Mapping[str, Any],
    who: Identity,
    now: dt.datetime,
    touch: bool = True,
) -> None:
    """Write ``values`` to the task row and log each one that changes."""
    task_id = int(task["jediTaskID"])
    update = dict(values)
    if touch:
        update.setdefault("modificationTime", now)
    conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(**update))
    for name, value in values.items():
        if task.get(name) != value:
            log_change(conn, task_id, name, task.get(name), value, who, now)


def _update_params(conn: Connection, task_id: int, changes: Mapping[str, Any]) -> None:
    """Merge ``changes`` into the stored task parameters (None removes a key)."""
    text = conn.execute(
        select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
    ).scalar_one_or_none()
    if text is None:
        return
    params = json.loads(text)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    conn.execute(
        task_params.update().where(task_params.c.jediTaskID == task_id).values(taskParams=json.dumps(params))
    )


def _queued_jobs(conn: Connection, task_id: int, statuses: tuple[str, ...] = QUEUED_JOB_STATUSES) -> Any:
    return jobs.update().where(jobs.c.jediTaskID == task_id, jobs.c.jobStatus.in_(statuses))


# --- change_* ---------------------------------------------------------------------------------


def change_priority(rt: Runtime, task_id: int, priority: int, who: Identity) -> Reply:
    """New currentPriority for the task and its jobs that have not started yet."""
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        return Reply(False, f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}", None)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return Reply(False, task.message, None)
        _set(conn, task, {"currentPriority": priority}, who, now)
        _update_params(conn, task_id, {"currentPriority": priority})
        conn.execute(_queued_jobs(conn, task_id).values(currentPriority=priority, modificationTime=now))
    return Reply(True, _changed(1), None)


def change_attribute(rt: Runtime, task_id: int, attribute: str, value: int, who: Identity) -> Reply:
    """Set ramCount, wallTime, cpuTime or coreCount of a task (its next jobs take the new value)."""
    if attribute not in ATTRIBUTE_COLUMNS:
        return Reply(
            False,
            f"{attribute[:64]} is not a valid attribute. Valid attributes are {list(ATTRIBUTE_COLUMNS)}",
            None,
        )
    low = 1 if attribute == "coreCount" else 0
    if not low <= value <= ATTRIBUTE_LIMITS[attribute]:
        return Reply(False, f"{attribute} must be between {low} and {ATTRIBUTE_LIMITS[attribute]}", None)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return Reply(False, task.message, None)
        _set(conn, task, {ATTRIBUTE_COLUMNS[attribute]: value}, who, now)
        if attribute in _PARAM_KEYS:
            _update_params(conn, task_id, {_PARAM_KEYS[attribute]: value})
    return Reply(True, _changed(1), None)


def _split_rule_with(rule: str | None, name: str, value: str) -> str:
    """``rule`` ("AB=1,CD=2") with ``name`` set to ``value`` (added when absent)."""
    items = [part for part in (rule or "").split(",") if part and not part.startswith(f"{name}=")]
    items.append(f"{name}={value}")
    return ",".join(items)


def change_split_rule(rt: Runtime, task_id: int, attribute: str, value: str, who: Identity) -> Reply:
    """Add or change one ``name=value`` item of the task's split rule."""
    if attribute not in SPLIT_RULE_ATTRIBUTES:
        return Reply(
            False,
            f"{attribute[:64]} is not a valid attribute. Valid attributes are {list(SPLIT_RULE_ATTRIBUTES)}",
            2,
        )
    if not value or len(value) > 100 or any(c in value for c in ",= \t\n"):
        return Reply(False, "value must be 1 to 100 characters without commas, '=' or blanks", None)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return Reply(False, task.message, None)
        new_rule = _split_rule_with(task.get("splitRule"), attribute, value)
        if len(new_rule) > 1000:
            return Reply(False, "the split rule would be longer than 1000 characters", None)
        _set(conn, task, {"splitRule": new_rule}, who, now)
    return Reply(True, _changed(1), None)


def change_modification_time(rt: Runtime, task_id: int, hour_offset: int, who: Identity) -> Reply:
    """Set modificationTime to now + ``hour_offset`` hours (negative: the task looks idle sooner)."""
    if not -MAX_HOUR_OFFSET <= hour_offset <= MAX_HOUR_OFFSET:
        return Reply(
            False, f"failed to convert {hour_offset} to time (at most {MAX_HOUR_OFFSET} hours)", None
        )
    now = utcnow()
    new_time = now + dt.timedelta(hours=hour_offset)
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return Reply(False, task.message, None)
        conn.execute(tasks.update().where(tasks.c.jediTaskID == task_id).values(modificationTime=new_time))
        log_change(conn, task_id, "modificationTime", task["modificationTime"], new_time, who, now)
    return Reply(True, _changed(1), None)


# --- reassign and shares ----------------------------------------------------------------------


def _registered(command: str, task_id: int) -> str:
    return f"command={command} is registered for jediTaskID={task_id}"


def reassign(
    rt: Runtime,
    task_id: int,
    who: Identity,
    site: str | None,
    cloud: str | None,
    nucleus: str | None,
    mode: str | None,
) -> Reply:
    """Send a task's work to a site (queue), cloud or nucleus.

    The destination is stored (a site also in the parameters new jobs are made from). Then, as
    JEDI's modes say: ``kill`` (default) kills every unfinished job, ``soft`` only the jobs not
    yet at a pilot, ``nokill`` none; the task manager makes new jobs for the files the killed
    jobs leave undone, at the new destination.
    """
    if mode not in (None, "", "kill", "soft", "nokill"):
        return Reply(False, f"mode must be kill, soft or nokill, not {mode[:32]!r}", BAD_STATUS)
    if not (site or cloud or nucleus):
        return Reply(False, "one of site, cloud or nucleus is needed", BAD_STATUS)
    for name, value, longest in (("site", site, 128), ("cloud", cloud, 50), ("nucleus", nucleus, 52)):
        if value and len(value) > longest:
            return Reply(False, f"{name} is longer than {longest} characters", BAD_STATUS)
    if site and site not in {q.name for q in list_queues(rt, fresh=True)}:
        return Reply(False, f"no queue named {site!r} is known to this server", BAD_STATUS)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return task
        if TaskStatus(task["status"]) not in ACTIVE or task["status"] in (
            TaskStatus.ABORTING,
            TaskStatus.FINISHING,
        ):
            return Reply(
                False,
                f"command=reassign cannot be executed for jediTaskID={task_id} in {task['status']} status",
                BAD_STATUS,
            )
        if site:
            _set(conn, task, {"site": site}, who, now)
            _update_params(conn, task_id, {"site": site})
        elif nucleus:
            _set(conn, task, {"nucleus": nucleus}, who, now)
        else:
            _set(conn, task, {"cloud": cloud}, who, now)
        statuses = {"soft": QUEUED_JOB_STATUSES, "nokill": ()}.get(mode or "kill", UNFINISHED_JOB_STATUSES)
        ids = (
            [
                int(r[0])
                for r in conn.execute(
                    select(jobs.c.PandaID).where(jobs.c.jediTaskID == task_id, jobs.c.jobStatus.in_(statuses))
                )
            ]
            if statuses
            else []
        )
    if ids:
        kill_jobs(rt, ids, who, KILL_REASSIGNED)
    return Reply(True, _registered("reassign", task_id), OK)


def reassign_global_share(
    rt: Runtime, task_ids: list[int], share: str, reassign_running_jobs: bool, who: Identity
) -> Reply:
    """Put tasks (and their queued jobs, running ones too if asked) in another global share."""
    if not share or len(share) > 32:
        return Reply(False, "share must be 1 to 32 characters", 1)
    known = set(parse_shares(rt.settings.global_shares)) if rt.settings.global_shares else set()
    if known and share not in known:
        return Reply(
            False, f"share {share!r} is not a leaf share of this server ({', '.join(sorted(known))})", 1
        )
    statuses = UNFINISHED_JOB_STATUSES if reassign_running_jobs else QUEUED_JOB_STATUSES
    now = utcnow()
    changed = 0
    with write_tx(rt.engine) as conn:
        for task_id in task_ids:
            task = _load(conn, rt, task_id, who)
            if isinstance(task, Reply):
                continue
            _set(conn, task, {"gshare": share}, who, now)
            conn.execute(_queued_jobs(conn, task_id, statuses).values(gshare=share, modificationTime=now))
            changed += 1
    if not changed:
        return Reply(False, "no task could be changed (unknown tasks or not allowed)", 1)
    return Reply(True, f"reassigned {changed} of {len(task_ids)} tasks to share {share}", OK)


def unfinished_job_ids(rt: Runtime, task_id: int, limit: int) -> list[int]:
    """PandaIDs of the task's jobs that have not ended (what task/kill_unfinished_jobs kills)."""
    with read_tx(rt.engine) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                select(jobs.c.PandaID)
                .where(jobs.c.jediTaskID == task_id, jobs.c.jobStatus.in_(UNFINISHED_JOB_STATUSES))
                .order_by(jobs.c.PandaID)
                .limit(limit)
            )
        ]


# --- commands answered for the record ---------------------------------------------------------


def release(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Release a task held for input staging: inputs are never staged here, so nothing waits."""
    return _note(rt, task_id, who, "release", "inputs are not staged by this server, nothing to release")


def avalanche(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """End a task's scouting: tasks here make all their jobs from the start, so it is a no-op."""
    return _note(
        rt, task_id, who, "avalanche", "tasks have no scouting phase here, all their jobs are generated"
    )


def _note(rt: Runtime, task_id: int, who: Identity, command: str, why: str) -> Reply:
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return task
        if TaskStatus(task["status"]) not in ACTIVE:
            return Reply(
                False,
                f"command={command} cannot be executed for jediTaskID={task_id} in {task['status']} status",
                BAD_STATUS,
            )
        log_change(conn, task_id, command, None, "requested", who, now)
    return Reply(True, f"{_registered(command, task_id)} ({why})", OK)


# --- job cloning and jumbo jobs ---------------------------------------------------------------


def enable_job_cloning(
    rt: Runtime,
    task_id: int,
    who: Identity,
    mode: str | None,
    multiplicity: int | None,
    num_sites: int | None,
) -> Reply:
    """Store the cloning setting of a task (JEDI's answer: success and a message)."""
    mode = mode or "runonce"
    if mode not in CLONING_MODES:
        return Reply(False, f"mode must be one of {', '.join(CLONING_MODES)}", None)
    for name, value in (("multiplicity", multiplicity), ("num_sites", num_sites)):
        if value is not None and not 1 <= value <= 100:
            return Reply(False, f"{name} must be between 1 and 100", None)
    setting = f"{mode}:{multiplicity or ''}:{num_sites or ''}"
    return _store(rt, task_id, who, {"jobCloning": setting}, f"job cloning enabled ({setting})")


def disable_job_cloning(rt: Runtime, task_id: int, who: Identity) -> Reply:
    """Remove the cloning setting of a task."""
    return _store(rt, task_id, who, {"jobCloning": None}, "job cloning disabled")


def _store(rt: Runtime, task_id: int, who: Identity, values: Mapping[str, Any], message: str) -> Reply:
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return Reply(False, task.message, None)
        if TaskStatus(task["status"]) in FINAL:
            return Reply(False, f"jediTaskID={task_id} is {task['status']}", None)
        _set(conn, task, values, who, now)
    return Reply(True, message, None)


def enable_jumbo_jobs(rt: Runtime, task_id: int, who: Identity, total: int, per_site: int | None) -> Reply:
    """Store the jumbo-job setting: the task manager keeps up to ``total`` jumbo jobs of an
    event-service task alive, at most ``per_site`` on one queue, and holds back its co-jumbo
    consumers (core/tasks/jumbo.py); other tasks only keep the setting. ``total`` 0 switches
    jumbo jobs off."""
    per_site = per_site or total
    for name, value in (("jumbo_jobs_total", total), ("jumbo_jobs_per_site", per_site)):
        if not 0 <= value <= 10**5:
            return Reply(False, f"{name} must be between 0 and 100000", 1)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        task = _load(conn, rt, task_id, who)
        if isinstance(task, Reply):
            return task
        if TaskStatus(task["status"]) in FINAL:
            return Reply(False, f"jediTaskID={task_id} is {task['status']}", BAD_STATUS)
        values = {
            # "D" (switched off) releases the waiting co-jumbo jobs (core/tasks/jumbo.py)
            "useJumbo": USE_JUMBO_ON if total > 0 else (USE_JUMBO_OFF if task.get("useJumbo") else None),
            "numJumboJobs": total or None,
            "numJumboJobsPerSite": per_site or None,
        }
        _set(conn, task, values, who, now)
    state = "enabled" if total > 0 else "disabled"
    if total > 0 and not has_event_ranges(rt, task_id):
        return Reply(
            True,
            f"jumbo jobs {state} for jediTaskID={task_id} (setting stored; no jumbo jobs are made: "
            "the task does not use the event service)",
            OK,
        )
    return Reply(True, f"jumbo jobs {state} for jediTaskID={task_id} (at most {total} at a time)", OK)


def jumbo_job_datasets(rt: Runtime, from_offset: int, to_offset: int) -> dict[int, list[str]]:
    """Input datasets of the tasks with jumbo jobs enabled, modified between the two offsets (days)."""
    now = utcnow()
    floor = now - dt.timedelta(days=from_offset)
    ceiling = now - dt.timedelta(days=to_offset)
    out: dict[int, list[str]] = {}
    with read_tx(rt.engine) as conn:
        task_ids = [
            int(r[0])
            for r in conn.execute(
                select(tasks.c.jediTaskID)
                .where(
                    tasks.c.useJumbo.is_not(None),
                    tasks.c.modificationTime >= floor,
                    tasks.c.modificationTime <= ceiling,
                )
                .limit(10000)
            )
        ]
        for start in range(0, len(task_ids), 900):
            chunk = task_ids[start : start + 900]
            for task_id, name in conn.execute(
                select(task_datasets.c.jediTaskID, task_datasets.c.datasetName).where(
                    task_datasets.c.jediTaskID.in_(chunk), task_datasets.c.type == "input"
                )
            ):
                out.setdefault(int(task_id), []).append(name)
        for task_id in task_ids:
            out.setdefault(task_id, [])
    return out


def change_log(rt: Runtime, task_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The task's recorded changes, newest first."""
    with read_tx(rt.engine) as conn:
        rows = conn.execute(
            select(task_change_log)
            .where(task_change_log.c.jediTaskID == task_id)
            .order_by(task_change_log.c.id.desc())
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]
