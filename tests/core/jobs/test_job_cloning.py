"""Job cloning (runonce, storeonce): clones made by the task layer, told to the pilot, and one
clone per jobset counting, as the real server decides it; on every backend."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from pandawms.api.pilot_codec import job_for_pilot
from pandawms.core.jobs import dispatch
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import commands as tasks
from pandawms.db.schema import files, job_clone_semaphores, jobs
from pandawms.db.schema_tasks import task_files
from pandawms.model.identity import Identity
from tests.core.tasks.test_tasks import JANE, QUEUE, _queue, prun_params

PILOT = Identity(dn="/CN=pilot", roles=frozenset({"pilot", "production", "user"}), method="x509")


def _jobs(rt: Runtime, task_id: int) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(
                jobs.c.PandaID,
                jobs.c.jobsetID,
                jobs.c.jobStatus,
                jobs.c.specialHandling,
                jobs.c.jobSubStatus,
                jobs.c.taskBufferErrorCode,
                jobs.c.taskBufferErrorDiag,
                jobs.c.commandToPilot,
            )
            .where(jobs.c.jediTaskID == task_id)
            .order_by(jobs.c.PandaID)
        ).mappings()
        return [dict(r) for r in rows]


def _by_id(rt: Runtime, task_id: int) -> dict[int, dict[str, Any]]:
    return {j["PandaID"]: j for j in _jobs(rt, task_id)}


def _cloned_task(rt: Runtime, mode: str) -> tuple[int, list[list[int]]]:
    _queue(rt)
    reply = tasks.submit_task(rt, prun_params(useJobCloning=mode, nEsConsumers=3, nEvents=2), JANE)
    assert reply.success, reply
    made = _jobs(rt, reply.data)
    groups: dict[int, list[int]] = {}
    for job in made:
        groups.setdefault(job["jobsetID"], []).append(job["PandaID"])
    return int(reply.data), [groups[k] for k in sorted(groups)]


def _dispatch_all(rt: Runtime, n: int) -> list[dict[str, Any]]:
    found = dispatch.acquire_jobs(
        rt, dispatch.DispatchRequest(QUEUE, n_jobs=n, prod_source_label="user"), PILOT
    )
    return [job_for_pilot(j) for j in found]


def _report(rt: Runtime, panda_id: int, state: str) -> str:
    """A pilot's update; a finished one reports every output as the pilot's JSON does."""
    report = None
    if state == "finished":
        with rt.engine.connect() as conn:
            outputs = conn.execute(
                select(files.c.lfn).where(files.c.PandaID == panda_id, files.c.type.in_(("output", "log")))
            ).all()
        report = json.dumps({r[0]: {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"} for r in outputs})
    return update_job(rt, PilotUpdate(panda_id, state, report=report)).command


def test_the_task_makes_clones_and_the_pilot_is_told(rt: Runtime) -> None:
    task_id, groups = _cloned_task(rt, "runonce")
    # Two pieces of work, three clones each, each group its own jobset (its first PandaID).
    assert len(groups) == 2 and all(len(g) == 3 for g in groups)
    assert all(group[0] == _by_id(rt, task_id)[group[0]]["jobsetID"] for group in groups)
    assert {j["specialHandling"] for j in _jobs(rt, task_id)} == {"sc:1"}
    sent = _dispatch_all(rt, 10)
    assert len(sent) == 6 and {j["cloneJob"] for j in sent} == {"runonce"}


def test_runonce_the_first_clone_to_run_wins(rt: Runtime) -> None:
    task_id, groups = _cloned_task(rt, "runonce")
    first, second, third = groups[0]
    _dispatch_all(rt, 10)
    assert _report(rt, second, "running") == "NULL"  # the first to start takes the semaphore
    assert _report(rt, first, "starting") == "NULL"  # starting takes nothing yet
    assert _report(rt, first, "running") == "tobekilled"
    jobs_now = _by_id(rt, task_id)
    assert jobs_now[first]["jobStatus"] == "closed" and jobs_now[first]["jobSubStatus"] == "jc_unlock"
    assert jobs_now[first]["taskBufferErrorCode"] == 200
    assert (
        jobs_now[first]["taskBufferErrorDiag"] == f"closed since another clone PandaID={second} got semaphore"
    )
    # The task's files follow the winner.
    with rt.engine.connect() as conn:
        owners = {
            r[0] for r in conn.execute(select(task_files.c.PandaID).where(task_files.c.jediTaskID == task_id))
        }
    assert second in owners and first not in owners
    # The winner finishes: the clone still held by a pilot is told to stop.
    assert _report(rt, second, "finished") == "NULL"
    jobs_now = _by_id(rt, task_id)
    assert jobs_now[second]["jobStatus"] == "finished"
    assert (
        jobs_now[third]["commandToPilot"] == "tobekilled" and jobs_now[third]["jobSubStatus"] == "jc_unlock"
    )
    # The other jobset is untouched.
    assert {jobs_now[i]["jobStatus"] for i in groups[1]} == {"sent"}


def test_runonce_a_failed_holder_gives_the_work_to_another_clone(rt: Runtime) -> None:
    task_id, groups = _cloned_task(rt, "runonce")
    first, second, _ = groups[0]
    _dispatch_all(rt, 10)
    assert _report(rt, first, "running") == "NULL"
    assert _report(rt, first, "failed") == "NULL"
    with rt.engine.connect() as conn:
        assert conn.execute(select(job_clone_semaphores)).all() == []
    assert _report(rt, second, "running") == "NULL"
    assert _by_id(rt, task_id)[second]["jobStatus"] == "running"


def test_storeonce_all_run_and_the_first_to_finish_counts(rt: Runtime) -> None:
    task_id, groups = _cloned_task(rt, "storeonce")
    first, second, third = groups[0]
    sent = _dispatch_all(rt, 10)
    assert {j["cloneJob"] for j in sent} == {"storeonce"}
    for panda_id in (first, second, third):
        assert _report(rt, panda_id, "running") == "NULL"  # every clone runs
    assert _report(rt, third, "finished") == "NULL"
    jobs_now = _by_id(rt, task_id)
    assert jobs_now[third]["jobStatus"] == "finished"
    assert jobs_now[first]["commandToPilot"] == jobs_now[second]["commandToPilot"] == "tobekilled"
    # A clone that finishes anyway is closed: its output is not kept.
    assert _report(rt, first, "finished") == "tobekilled"
    jobs_now = _by_id(rt, task_id)
    assert jobs_now[first]["jobStatus"] == "closed" and jobs_now[first]["taskBufferErrorCode"] == 200
    assert _report(rt, second, "failed") == "tobekilled"  # its pilot stopped it
    assert _by_id(rt, task_id)[second]["jobStatus"] == "cancelled"


def test_jobs_without_cloning_are_untouched(rt: Runtime) -> None:
    _queue(rt)
    reply = tasks.submit_task(rt, prun_params(nEvents=2), JANE)
    made = _jobs(rt, reply.data)
    assert len(made) == 2 and {j["specialHandling"] for j in made} == {None}
    assert {j["jobsetID"] for j in made} == {reply.data}
    assert all("cloneJob" not in j for j in _dispatch_all(rt, 10))


def test_runonce_a_clone_finishing_unannounced_is_not_kept(rt: Runtime) -> None:
    task_id, groups = _cloned_task(rt, "runonce")
    first, second, _ = groups[0]
    _dispatch_all(rt, 10)
    assert _report(rt, first, "running") == "NULL"
    # second never said it ran; its finish does not count, the holder's does.
    assert _report(rt, second, "finished") == "tobekilled"
    assert _by_id(rt, task_id)[second]["jobStatus"] == "closed"
    assert _report(rt, first, "finished") == "NULL"
    assert _by_id(rt, task_id)[first]["jobStatus"] == "finished"
