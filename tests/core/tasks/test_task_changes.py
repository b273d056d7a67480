"""Operator changes of tasks (core/tasks/changes.py), on every backend: effect, history, refusals."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import changes as task_changes
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.schema import jobs
from pandawms.db.schema_tasks import task_params
from pandawms.db.schema_tasks import tasks as tasks_table
from pandawms.model.identity import Identity
from tests.core.tasks.test_tasks import JANE, JOHN, QUEUE, _queue, prun_params

BOSS = Identity(dn="/DC=org/CN=Boss", roles=frozenset({"manager", "production"}), method="x509")


def _task(rt: Runtime) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        row = conn.execute(select(tasks_table)).mappings().one()
        return dict(row)


def _params(rt: Runtime, task_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        text = conn.execute(
            select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
        ).scalar_one()
    return dict(json.loads(text))


def _job_values(rt: Runtime, task_id: int, column: str) -> set[Any]:
    with rt.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(jobs.c[column]).where(jobs.c.jediTaskID == task_id))}


def test_changes_reach_task_params_jobs_and_history(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params(), JANE).data
    assert _job_values(rt, task_id, "jobStatus") == {"activated"}

    assert task_changes.change_priority(rt, task_id, 1500, JOHN) == tasks.Reply(
        False, "not the task owner or no production role", None
    )
    assert task_changes.change_priority(rt, 999999, 1500, BOSS).message == "Task not found"
    assert not task_changes.change_priority(rt, task_id, 10**7, BOSS).success
    assert task_changes.change_priority(rt, task_id, 1500, BOSS) == tasks.Reply(True, "1 tasks changed", None)
    assert _task(rt)["currentPriority"] == 1500 and _params(rt, task_id)["currentPriority"] == 1500
    assert _job_values(rt, task_id, "currentPriority") == {1500}

    bad = task_changes.change_attribute(rt, task_id, "nEvents", 3, BOSS)
    assert not bad.success and "is not a valid attribute" in bad.message
    assert not task_changes.change_attribute(rt, task_id, "coreCount", 0, BOSS).success
    assert task_changes.change_attribute(rt, task_id, "ramCount", 3000, BOSS).success
    assert task_changes.change_attribute(rt, task_id, "wallTime", 3600, BOSS).success
    assert task_changes.change_attribute(rt, task_id, "cpuTime", 50, BOSS).success
    row = _task(rt)
    assert (row["ramCount"], row["walltime"], row["cpuTime"]) == (3000, 3600, 50)
    assert _params(rt, task_id)["maxWalltime"] == 3600

    refused = task_changes.change_split_rule(rt, task_id, "XX", "1", BOSS)
    assert not refused.success and refused.data == 2
    assert not task_changes.change_split_rule(rt, task_id, "NF", "1,AI=2", BOSS).success
    assert task_changes.change_split_rule(rt, task_id, "NF", "2", BOSS).success
    assert task_changes.change_split_rule(rt, task_id, "AI", "1", BOSS).success
    assert task_changes.change_split_rule(rt, task_id, "NF", "5", BOSS).success
    assert _task(rt)["splitRule"] == "AI=1,NF=5"

    before = _task(rt)["modificationTime"]
    assert task_changes.change_modification_time(rt, task_id, -12, BOSS).success
    assert (before - _task(rt)["modificationTime"]).total_seconds() > 11 * 3600
    assert not task_changes.change_modification_time(rt, task_id, 10**6, BOSS).success

    assert task_changes.enable_job_cloning(rt, task_id, BOSS, "storeonce", 2, None).success
    assert not task_changes.enable_job_cloning(rt, task_id, BOSS, "everywhere", 2, None).success
    assert _task(rt)["jobCloning"] == "storeonce:2:"
    assert task_changes.disable_job_cloning(rt, task_id, BOSS).success
    assert _task(rt)["jobCloning"] is None

    jumbo = task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 5, None)
    assert jumbo.success and jumbo.data == 0 and "event service" in jumbo.message
    assert (_task(rt)["useJumbo"], _task(rt)["numJumboJobsPerSite"]) == ("W", 5)
    assert task_id in task_changes.jumbo_job_datasets(rt, 1, 0)

    release = task_changes.release(rt, task_id, BOSS)
    assert release.success and release.data == 0 and "not staged" in release.message
    assert task_changes.avalanche(rt, task_id, BOSS).success

    log = task_changes.change_log(rt, task_id)
    changed = [entry["attribute"] for entry in reversed(log)]
    assert changed[:6] == ["currentPriority", "ramCount", "walltime", "cpuTime", "splitRule", "splitRule"]
    assert {"modificationTime", "jobCloning", "useJumbo", "release", "avalanche"} <= set(changed)
    assert log[-1]["oldValue"] == "1000" and log[-1]["newValue"] == "1500" and log[-1]["changedBy"] == "Boss"


def test_reassign_kills_by_mode_and_new_jobs_go_to_the_new_site(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    _queue(rt)
    spec = {"name": "OTHER_Q", "status": "online", "state": "ACTIVE", "type": "unified", "corecount": 1}
    load_queues(rt, json.dumps({QUEUE: json.loads(_queue_doc()), "OTHER_Q": spec}))
    task_id = tasks.submit_task(rt, prun_params(), JANE).data
    assert task_changes.reassign(rt, task_id, JOHN, "OTHER_Q", None, None, None).data == tasks.NOT_OWNER
    assert task_changes.reassign(rt, task_id, JANE, "NO_SUCH_Q", None, None, None).data == tasks.BAD_STATUS
    assert task_changes.reassign(rt, task_id, JANE, None, None, None, "hard").data == tasks.BAD_STATUS
    # nokill: the destination changes, the jobs stay.
    assert task_changes.reassign(rt, task_id, JANE, None, "US", None, "nokill").data == tasks.OK
    assert _task(rt)["cloud"] == "US" and _job_values(rt, task_id, "jobStatus") == {"activated"}
    reply = task_changes.reassign(rt, task_id, JANE, "OTHER_Q", None, None, "soft")
    assert reply == tasks.Reply(True, f"command=reassign is registered for jediTaskID={task_id}", 0)
    assert _task(rt)["site"] == "OTHER_Q" and _params(rt, task_id)["site"] == "OTHER_Q"
    assert _job_values(rt, task_id, "jobStatus") == {"closed"}
    assert _job_values(rt, task_id, "jobSubStatus") == {"toreassign"}
    # The task manager makes new jobs for the undone files, at the new site.
    manage_tasks(rt)
    assert _job_values(rt, task_id, "computingSite") == {QUEUE, "OTHER_Q"}
    with rt.engine.connect() as conn:
        fresh = conn.execute(
            select(jobs.c.computingSite).where(jobs.c.jediTaskID == task_id, jobs.c.jobStatus == "activated")
        ).all()
    assert len(fresh) == 3 and {r[0] for r in fresh} == {"OTHER_Q"}


def _queue_doc() -> str:
    return json.dumps(
        {
            "name": QUEUE,
            "status": "online",
            "state": "ACTIVE",
            "type": "unified",
            "corecount": 1,
            "maxrss": 4000,
            "maxtime": 7200,
            "astorages": {"pw": ["LOCAL_DISK"]},
        }
    )


def test_global_share_moves_tasks_and_queued_jobs(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict", global_shares="Express=10,Analysis=90")
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params(), JANE).data
    refused = task_changes.reassign_global_share(rt, [task_id], "NoSuchShare", False, BOSS)
    assert not refused.success and refused.data == 1
    reply = task_changes.reassign_global_share(rt, [task_id, 999999], "Express", False, BOSS)
    assert reply.success and reply.data == 0 and "1 of 2" in reply.message
    assert _task(rt)["gshare"] == "Express" and _job_values(rt, task_id, "gshare") == {"Express"}
    assert not task_changes.reassign_global_share(rt, [task_id], "Express", False, JOHN).success
