"""The core on every backend: submit, dispatch, pilot updates, kill, reads."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from pandawms.core.jobs import dispatch, heartbeat, kill, submit
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.runtime import Runtime
from pandawms.db.schema import files, job_status_log, jobs
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")
BOB = Identity(dn="/DC=org/CN=Bob Jones", method="x509")


def _submit(rt: Runtime, *jobs_: dict, who: Identity = ALICE) -> list[int]:
    return [answer[0] for answer in submit.submit_jobs(rt, list(jobs_), who)]


def _dispatch(rt: Runtime, site: str = "TEST_SITE", n: int = 1, label: str = "user") -> list[int]:
    req = dispatch.DispatchRequest(site=site, n_jobs=n, prod_source_label=label, node="wn1")
    return [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)]


def _status(rt: Runtime, panda_id: int) -> str:
    return jobs_read.get_statuses(rt, [panda_id])[panda_id]["jobStatus"]


def _history(rt: Runtime, panda_id: int) -> list[str]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(job_status_log.c.jobStatus)
            .where(job_status_log.c.PandaID == panda_id)
            .order_by(job_status_log.c.id)
        )
        return [r[0] for r in rows]


def test_submit_activates_jobs_with_a_site_and_answers_like_storejobs(rt: Runtime) -> None:
    answers = submit.submit_jobs(
        rt, [make_job(), make_job(site=None), make_job(prodSourceLabel="managed")], ALICE
    )
    (a, user_def, jobset), (b, _, _), (c, _, name) = answers
    assert user_def == 1 and jobset == {"jobsetID": a}
    assert name == "test-job"
    assert _status(rt, a) == "activated"
    assert _status(rt, b) == "defined"
    described = jobs_read.get_descriptions(rt, [a, 999999], include_archive=True)
    job = described[0]
    assert described[1] is None
    assert job is not None
    assert job["prodUserName"] == "Alice Smith" and job["prodUserID"] == ALICE.dn
    assert job["jobParameters"] == "echo hello"
    assert job["maxAttempt"] == 2 and job["attemptNr"] == 0
    assert job["relocationFlag"] == 1
    assert job["creationTime"] == job["modificationTime"] == job["stateChangeTime"]
    assert _history(rt, a) == ["activated"]


def test_submit_is_all_or_nothing(rt: Runtime) -> None:
    with pytest.raises(PandaError, match="job 1: currentPriority must be an integer"):
        submit.submit_jobs(rt, [make_job(), make_job(currentPriority="high", assignedPriority=None)], ALICE)
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
    with pytest.raises(PandaError, match="type must be one of"):
        submit.submit_jobs(rt, [make_job(files=[make_file("a.root", "weird")])], ALICE)
    with pytest.raises(PandaError, match="No jobs"):
        submit.submit_jobs(rt, [], ALICE)


def test_dispatch_takes_highest_priority_then_oldest(rt: Runtime) -> None:
    low, high1, high2 = _submit(
        rt, make_job(assignedPriority=10), make_job(assignedPriority=500), make_job(assignedPriority=500)
    )
    assert _dispatch(rt) == [high1]
    assert _dispatch(rt, n=5) == [high2, low]
    assert _dispatch(rt) == []
    assert _status(rt, low) == "sent"
    assert _history(rt, low) == ["activated", "sent"]


def test_dispatch_honours_site_label_memory_and_disk(rt: Runtime) -> None:
    big, small, managed = _submit(
        rt,
        make_job(minRamCount=8000),
        make_job(minRamCount=1000, maxDiskCount=100),
        make_job(prodSourceLabel="managed"),
    )
    assert _dispatch(rt, site="OTHER") == []
    req = dispatch.DispatchRequest(
        site="TEST_SITE", n_jobs=5, prod_source_label="user", memory_mb=2000, disk_mb=50
    )
    assert [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)] == []
    req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=5, prod_source_label="user", memory_mb=2000)
    assert [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)] == [small]
    assert _dispatch(rt, label="managed") == [managed]
    assert _status(rt, big) == "activated"


def _run_to(rt: Runtime, panda_id: int, *states: str) -> list[heartbeat.UpdateResult]:
    return [
        heartbeat.update_job(rt, PilotUpdate(panda_id, s, 0, {"modificationHost": "wn1"})) for s in states
    ]


def test_pilot_lifecycle_to_finished_with_output_report(rt: Runtime) -> None:
    (panda_id,) = _submit(rt, make_job(files=[make_file("out.root"), make_file("job.log.tgz", "log")]))
    assert _dispatch(rt) == [panda_id]
    results = _run_to(rt, panda_id, "starting", "running", "running")
    assert [r.command for r in results] == ["NULL", "NULL", "NULL"]
    report = json.dumps(
        {
            "out.root": {"guid": "g-1", "fsize": 1234, "adler32": "0a1b2c3d", "surl": "x"},
            "job.log.tgz": {"guid": "g-2", "fsize": 77, "adler32": "01020304"},
        }
    )
    done = heartbeat.update_job(
        rt, PilotUpdate(panda_id, "finished", 0, {"transExitCode": "0", "pilotErrorCode": 0}, report=report)
    )
    assert done.job_status == "finished"
    assert _history(rt, panda_id) == ["activated", "sent", "starting", "running", "holding", "finished"]
    job = jobs_read.get_descriptions(rt, [panda_id], include_archive=True)[0]
    assert job is not None
    assert job["startTime"] is not None and job["endTime"] is not None
    by_lfn = {f["lfn"]: f for f in job["Files"]}
    assert by_lfn["out.root"]["status"] == "ready" and by_lfn["out.root"]["checksum"] == "ad:0a1b2c3d"
    assert by_lfn["out.root"]["fsize"] == 1234 and by_lfn["out.root"]["GUID"] == "g-1"
    again = heartbeat.update_job(rt, PilotUpdate(panda_id, "finished", 0, {}, report=report))
    assert again.command == "alreadydone"


def test_finished_without_its_outputs_fails_the_job(rt: Runtime) -> None:
    (panda_id,) = _submit(rt, make_job(files=[make_file("out.root")]))
    _dispatch(rt)
    _run_to(rt, panda_id, "running")
    result = heartbeat.update_job(rt, PilotUpdate(panda_id, "finished", 0, {}, report="{}"))
    assert result.job_status == "failed"
    job = jobs_read.get_descriptions(rt, [panda_id], include_archive=True)[0]
    assert job is not None
    assert job["ddmErrorCode"] == 200 and "out.root" in job["ddmErrorDiag"]


def test_update_guards(rt: Runtime) -> None:
    (panda_id,) = _submit(rt, make_job())
    assert (
        heartbeat.update_job(rt, PilotUpdate(panda_id, "running", 0)).command == "tobekilled"
    )  # not dispatched
    _dispatch(rt)
    assert heartbeat.update_job(rt, PilotUpdate(panda_id, "running", 5)).command == "tobekilled"  # attemptNr
    assert heartbeat.update_job(rt, PilotUpdate(987654, "running", 0)).command == "tobekilled"  # unknown
    _run_to(rt, panda_id, "running")
    assert _run_to(rt, panda_id, "starting")[0].job_status == "running"  # never back to starting
    _run_to(rt, panda_id, "transferring")
    assert _run_to(rt, panda_id, "running")[0].job_status == "transferring"  # late heartbeat ignored
    assert _status(rt, panda_id) == "transferring"


def test_kill_before_and_while_running(rt: Runtime) -> None:
    waiting, running, other = _submit(rt, make_job(), make_job(), make_job())
    assert _dispatch(rt, n=2) == [waiting, running]
    _run_to(rt, running, "running")
    assert kill.kill_jobs(rt, [waiting, running, 424242], ALICE) == [True, True, False]
    assert _status(rt, waiting) == "cancelled"
    assert _status(rt, running) == "running"
    reply = _run_to(rt, running, "running")[0]
    assert reply.command == "tobekilled"
    failed = heartbeat.update_job(rt, PilotUpdate(running, "failed", 0, {"pilotErrorCode": 1144}))
    assert failed.job_status == "cancelled"
    job = jobs_read.get_descriptions(rt, [running], include_archive=True)[0]
    assert job is not None and job["taskBufferErrorDiag"] == "killed by Alice Smith"
    assert _run_to(rt, waiting, "running")[0].command == "tobekilled"
    assert kill.kill_jobs(rt, [waiting], ALICE) == [False]  # already final
    assert _status(rt, other) == "activated"


def test_strict_mode_only_owner_kills(db_url: str, make_runtime) -> None:  # noqa: ANN001
    strict = make_runtime(db_url, auth_mode="strict")
    (panda_id,) = _submit(strict, make_job())
    assert kill.kill_jobs(strict, [panda_id], BOB) == [False]
    assert _status(strict, panda_id) == "activated"
    assert kill.kill_jobs(strict, [panda_id], ALICE) == [True]


def test_kill_codes_close_and_fail_outputs(rt: Runtime) -> None:
    (panda_id,) = _submit(rt, make_job(files=[make_file("o.root")]))
    assert kill.kill_jobs(rt, [panda_id], ALICE, code=51) == [True]
    job = jobs_read.get_descriptions(rt, [panda_id], include_archive=True)[0]
    assert job is not None
    assert job["jobStatus"] == "closed" and job["jobSubStatus"] == "toreassign"
    with rt.engine.connect() as conn:
        assert (
            conn.execute(select(files.c.status).where(files.c.PandaID == panda_id)).scalar_one() == "failed"
        )


def test_failed_jobs_are_retried_until_max_attempt(rt: Runtime) -> None:
    (first,) = _submit(rt, make_job(files=[make_file("out.root"), make_file("job.log.tgz", "log")]))
    chain = [first]
    for attempt in range(3):
        (got,) = _dispatch(rt)
        assert got == chain[-1]
        # 1099: stage-in failed, an error the retry rules call recoverable
        result = heartbeat.update_job(rt, PilotUpdate(got, "failed", attempt, {"pilotErrorCode": 1099}))
        assert result.job_status == "failed"
        with rt.engine.connect() as conn:
            child = conn.execute(select(jobs.c.PandaID).where(jobs.c.parentID == got)).scalar()
        if attempt < 2:
            assert child is not None
            clone = jobs_read.get_descriptions(rt, [child], include_archive=False)[0]
            assert clone is not None and clone["jobStatus"] == "activated"
            assert (
                clone["pilotErrorCode"] == 0
                and clone["startTime"] is None
                and clone["computingSite"] == "TEST_SITE"
            )
            chain.append(child)
        else:
            assert child is None, "maxAttempt reached: no more retries"
    described = {j["PandaID"]: j for j in jobs_read.get_descriptions(rt, chain, include_archive=True) if j}
    assert [described[p]["attemptNr"] for p in chain] == [0, 1, 2]
    assert described[chain[0]]["taskBufferErrorCode"] == 106
    assert described[chain[0]]["taskBufferErrorDiag"] == (
        f"retried as PandaID={chain[1]} (retry rule stage-in-or-out-trouble)"
    )
    assert [f["lfn"] for f in described[chain[2]]["Files"]] == ["out.root.2", "job.log.tgz.2"]
    assert described[chain[2]]["parentID"] == chain[1]
    assert described[chain[2]]["jobParameters"] == "echo hello"


def test_killed_jobs_are_not_retried(rt: Runtime) -> None:
    (panda_id,) = _submit(rt, make_job())
    _dispatch(rt)
    _run_to(rt, panda_id, "running")
    kill.kill_jobs(rt, [panda_id], ALICE)
    heartbeat.update_job(rt, PilotUpdate(panda_id, "failed", 0, {"pilotErrorCode": 1144}))
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1
