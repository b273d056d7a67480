"""The task layer in the core, on every backend: parameters, job generation, results, commands."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from pandawms.api.errors import status_of
from pandawms.core.jobs.dispatch import DispatchRequest, acquire_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks import read as tasks_read
from pandawms.core.tasks import sandbox as cache_files
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.schema import jobs
from pandawms.db.schema_tasks import task_files, task_params, task_status_log
from pandawms.db.schema_tasks import tasks as tasks_table
from pandawms.model.identity import Identity

QUEUE = "TASK_Q"
JANE = Identity(dn="/DC=org/CN=Jane Doe", method="x509")
JOHN = Identity(dn="/DC=org/CN=John Roe", method="x509")


def _queue(rt: Runtime) -> None:
    spec = {
        QUEUE: {
            "name": QUEUE,
            "status": "online",
            "state": "ACTIVE",
            "type": "unified",
            "corecount": 1,
            "maxrss": 4000,
            "maxtime": 7200,
            "astorages": {"pw": ["LOCAL_DISK"]},
        }
    }
    load_queues(rt, json.dumps(spec))


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def prun_params(name: str = "user.jdoe.t1/", **extra: Any) -> dict[str, Any]:
    """The task parameters prun --exec "echo hello" --nJobs 3 --noBuild sends (trimmed)."""
    base = name.rstrip("/")
    params: dict[str, Any] = {
        "taskName": name,
        "uniqueTaskName": True,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "processingType": "panda-client-2.2.0-jedi-run",
        "site": QUEUE,
        "nEvents": 3,
        "nEventsPerJob": 1,
        "sourceURL": "http://127.0.0.1:25080",
        "log": {
            "dataset": f"{base}.log/",
            "container": f"{base}.log/",
            "type": "template",
            "param_type": "log",
            "value": f"{base}.log.$JEDITASKID.${{SN}}.log.tgz",
        },
        "jobParameters": [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": "-r ."},
            {"type": "constant", "value": "__delimiter__", "hidden": True},
            {"type": "constant", "value": '-p "', "padding": False},
            {"type": "constant", "value": "echo%20hello", "padding": False},
            {"type": "constant", "value": '"'},
        ],
        "noInput": True,
    }
    params.update(extra)
    return params


def _run_jobs(rt: Runtime, outcome: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Dispatch every activated job and report it as a pilot would (finished unless told)."""
    got = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=100, prod_source_label="user"), JANE)
    for job in got:
        pid = job["PandaID"]
        attempt = job["attemptNr"]
        update_job(rt, PilotUpdate(pid, "running", attempt))
        state = (outcome or {}).get(pid, "finished")
        report = {
            f["lfn"]: {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"}
            for f in job["Files"]
            if f["type"] in ("output", "log")
        }
        update_job(
            rt, PilotUpdate(pid, state, attempt, report=json.dumps(report) if state == "finished" else None)
        )
    return got


def _status(rt: Runtime, task_id: int) -> str | None:
    return tasks_read.get_status(rt, task_id)


def test_bad_parameters_are_refused_naming_the_parameter(rt: Runtime) -> None:
    _queue(rt)
    cases = {
        "taskName": prun_params(taskName=None),
        "jobParameters": prun_params(jobParameters=[]),
        "jobParameters[0].type": prun_params(jobParameters=[{"type": "bogus", "value": "x"}]),
        "nEventsPerJob": prun_params(nEventsPerJob=0),
        "site": prun_params(site="NO_SUCH_QUEUE"),
        "maxAttempt": prun_params(maxAttempt="many"),
        "pfnList": prun_params(pfnList=[], noInput=None),
        "log.value": prun_params(log={"dataset": "x", "value": "no-serial"}),
        "jobParameters[0]": prun_params(
            jobParameters=[{"type": "template", "param_type": "input", "value": "${IN}", "dataset": "data.x"}]
        ),
        "buildSpec.archiveName": prun_params(
            buildSpec={"archiveName": "sources.missing.tar.gz", "jobParameters": "-i ${IN}"}
        ),
        "container": prun_params(log={"dataset": "x.log/", "container": 5, "value": "x.${SN}.log.tgz"}),
        "task_parameters": prun_params(extra=_nested(40)),
    }
    for name, params in cases.items():
        reply = tasks.submit_task(rt, params, JANE)
        assert not reply.success and reply.data == tasks.REFUSED, (name, reply)
        assert f"task parameter {name}" in reply.message, (name, reply.message)
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks_table)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 0


def test_task_makes_jobs_retries_failed_work_and_ends_done(rt: Runtime) -> None:
    _queue(rt)
    reply = tasks.submit_task(rt, prun_params(), JANE)
    assert reply.success and reply.message == f"succeeded. new jediTaskID={reply.data}"
    task_id = reply.data
    assert _status(rt, task_id) == "running"
    duplicate = tasks.submit_task(rt, prun_params(), JANE)
    assert not duplicate.success and duplicate.data == tasks.DUPLICATE
    dispatched = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=10, prod_source_label="user"), JANE)
    assert len(dispatched) == 3 and {j["jediTaskID"] for j in dispatched} == {task_id}
    assert dispatched[0]["jobParameters"] == '-j "" --sourceURL http://127.0.0.1:25080 -r . -p "echo%20hello"'
    assert [f["lfn"] for f in dispatched[0]["Files"]] == [f"user.jdoe.t1.log.{task_id}.1.log.tgz"]
    assert dispatched[0]["Files"][0]["destinationDBlockToken"] == "dst:LOCAL_DISK"
    # The second job fails: only its file comes back, as a new job with the next attempt.
    for index, job in enumerate(dispatched):
        lfn = job["Files"][0]["lfn"]
        report = json.dumps({lfn: {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"}})
        state = "failed" if index == 1 else "finished"
        update_job(rt, PilotUpdate(job["PandaID"], state, job["attemptNr"], report=report))
    first = dispatched
    manage_tasks(rt)
    again = _run_jobs(rt)
    assert len(again) == 1 and again[0]["attemptNr"] == 1
    assert again[0]["Files"][0]["lfn"] == f"user.jdoe.t1.log.{task_id}.4.log.tgz"
    manage_tasks(rt)
    assert _status(rt, task_id) == "done"
    shown = tasks_read.detailed_since(rt, JANE, None, None, 10)
    assert [(t["jediTaskID"], t["status"], t["superStatus"], t["pctFinished"]) for t in shown] == [
        (task_id, "done", "done", 100)
    ]
    assert tasks_read.detailed_since(rt, JOHN, None, None, 10) == []
    assert tasks_read.get_job_ids(rt, task_id) == sorted(j["PandaID"] for j in first + again)
    with rt.engine.connect() as conn:
        moves = [
            r[0]
            for r in conn.execute(
                select(task_status_log.c.status)
                .where(task_status_log.c.jediTaskID == task_id)
                .order_by(task_status_log.c.id)
            )
        ]
    assert moves == ["registered", "defined", "ready", "running", "done"]
    files = tasks_read.datasets_and_files(rt, task_id, ["pseudo_input", "log"], False)
    assert [f["status"] for f in files[0]["files"]] == ["finished"] * 3
    assert sorted(f["status"] for f in files[1]["files"]) == ["failed", "finished", "finished", "finished"]


def test_files_per_job_and_exhausted_attempts_fail_the_task(rt: Runtime) -> None:
    _queue(rt)
    params = prun_params(
        "user.jdoe.t2/",
        noInput=None,
        nEvents=None,
        pfnList=["root://a/f1", "root://a/f2", "root://a/f3"],
        nFilesPerJob=2,
        maxAttempt=1,
    )
    params["jobParameters"].append({"type": "constant", "value": '-i "${IN/T}"'})
    task_id = tasks.submit_task(rt, params, JANE).data
    got = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=10, prod_source_label="user"), JANE)
    assert [j["jobParameters"].split("-i ")[1] for j in got] == [
        "\"['root://a/f1', 'root://a/f2']\"",
        "\"['root://a/f3']\"",
    ]
    for job in got:
        update_job(rt, PilotUpdate(job["PandaID"], "failed", job["attemptNr"]))
    manage_tasks(rt)
    assert _status(rt, task_id) == "failed"
    # retry gives the failed files new attempts and the task new jobs.
    assert tasks.retry_task(rt, task_id, JANE).data == tasks.OK
    manage_tasks(rt)
    assert _status(rt, task_id) == "running"
    assert len(_run_jobs(rt)) == 2
    manage_tasks(rt)
    assert _status(rt, task_id) == "done"


def test_commands_check_owner_and_status(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params("user.jdoe.t3/", nEvents=4), JANE).data
    assert tasks.kill_task(rt, task_id, JOHN).data == tasks.NOT_OWNER
    assert tasks.kill_task(rt, 999999, JANE).data == tasks.NOT_FOUND
    assert tasks.pause_task(rt, task_id, JANE).data == tasks.OK
    assert _status(rt, task_id) == "paused"
    assert tasks.pause_task(rt, task_id, JANE).data == tasks.BAD_STATUS
    assert tasks.resume_task(rt, task_id, JANE).data == tasks.OK
    assert _status(rt, task_id) == "running"
    assert tasks.increase_attempts(rt, task_id, JANE, 2).success
    assert tasks.reload_input(rt, task_id, JANE).success
    assert len(_run_jobs(rt)) == 4
    assert tasks.finish_task(rt, task_id, JANE, soft=True).data == tasks.OK
    manage_tasks(rt)
    assert _status(rt, task_id) == "done"
    assert tasks.kill_task(rt, task_id, JANE).data == tasks.BAD_STATUS
    # Kill: the task is aborting until its jobs ended, then aborted.
    other = tasks.submit_task(rt, prun_params("user.jdoe.t4/"), JANE).data
    assert tasks.kill_task(
        rt, other, Identity(dn="/CN=boss", roles=frozenset({"manager"}), method="x509")
    ).success
    manage_tasks(rt)
    assert _status(rt, other) == "aborted"
    with rt.engine.connect() as conn:
        states = {r[0] for r in conn.execute(select(jobs.c.jobStatus).where(jobs.c.jediTaskID == other))}
        assert states == {"cancelled"}
        left = conn.execute(
            select(task_files.c.status).where(
                task_files.c.jediTaskID == other, task_files.c.type == "pseudo_input"
            )
        ).all()
    assert {r[0] for r in left} == {"failed"}
    # A killed task can be retried, as JEDI allows: its files come back and it ends done.
    assert tasks.retry_task(rt, other, JOHN).data == tasks.NOT_OWNER
    assert tasks.retry_task(rt, other, JANE).data == tasks.OK
    assert _status(rt, other) == "ready"
    manage_tasks(rt)
    assert _status(rt, other) == "running"
    assert len(_run_jobs(rt)) == len(left)
    manage_tasks(rt)
    assert _status(rt, other) == "done"


def test_build_step_runs_before_the_run_jobs(rt: Runtime) -> None:
    _queue(rt)
    sandbox = cache_files.store(rt, JANE, "sources.abc.tar.gz", b"\x1f\x8b" + b"\0" * 30)
    params = prun_params(
        "user.jdoe.t5/",
        nEvents=2,
        buildSpec={
            "prodSourceLabel": "panda",
            "archiveName": sandbox.name,
            "jobParameters": "-i ${IN} -o ${OUT} --sourceURL ${SURL} -r . ",
        },
    )
    params["jobParameters"].insert(3, {"type": "constant", "value": "-l ${LIB}"})
    task_id = tasks.submit_task(rt, params, JANE).data
    (build,) = _run_jobs(rt)
    assert build["prodSourceLabel"] == "panda" and build["transformation"].endswith("/buildGen-00-00-01")
    lib = build["Files"][0]["lfn"]
    assert build["jobParameters"].startswith(f"-i {sandbox.name} -o {lib} ")
    manage_tasks(rt)
    run = _run_jobs(rt)
    assert len(run) == 2 and all(f"-l {lib} " in j["jobParameters"] for j in run)
    manage_tasks(rt)
    assert _status(rt, task_id) == "done"


@pytest.mark.parametrize("new", [{"maxAttempt": 5}, {"taskName": "other"}])
def test_retry_with_new_parameters(sqlite_rt: Runtime, new: dict[str, Any]) -> None:
    rt = sqlite_rt
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params("user.jdoe.t6/", maxAttempt=1, nEvents=1), JANE).data
    for job in acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=10, prod_source_label="user"), JANE):
        update_job(rt, PilotUpdate(job["PandaID"], "failed", job["attemptNr"]))
    manage_tasks(rt)
    assert _status(rt, task_id) == "failed"
    reply = tasks.retry_task(rt, task_id, JANE, new)
    if "taskName" in new:
        assert not reply.success and "task parameter taskName cannot be changed" in reply.message
        assert _status(rt, task_id) == "failed"
    else:
        assert reply.success and reply.data == 3
        assert tasks_read.get_parameters(rt, task_id)["maxAttempt"] == 5  # type: ignore[index]
        assert _status(rt, task_id) == "ready"


def test_brokerage_exhausted_and_broken(rt: Runtime) -> None:
    _queue(rt)
    placed = tasks.submit_task(rt, prun_params("user.jdoe.t7/", site=None, nEvents=1), JANE).data
    assert [j["computingSite"] for j in acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=5), JANE)] == []
    got = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=5, prod_source_label="user"), JANE)
    assert [j["jediTaskID"] for j in got] == [placed]
    # Nothing takes 64 cores: the task waits with the reason, then is exhausted; resume retries.
    stuck = tasks.submit_task(rt, prun_params("user.jdoe.t8/", site=None, coreCount=64), JANE).data
    assert _status(rt, stuck) == "ready"
    with rt.engine.begin() as conn:
        row = conn.execute(select(tasks_table).where(tasks_table.c.jediTaskID == stuck)).mappings().one()
        assert "too few cores" in row["errorDialog"]
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.jediTaskID == stuck)
            .values(frozenTime=row["frozenTime"] - dt.timedelta(hours=2))
        )
    manage_tasks(rt)
    assert _status(rt, stuck) == "exhausted"
    assert tasks.resume_task(rt, stuck, JANE).data == tasks.OK
    assert _status(rt, stuck) == "ready"
    # A stored task whose parameters no longer make a plan is broken, with the reason.
    with rt.engine.begin() as conn:
        conn.execute(
            tasks_table.update().where(tasks_table.c.jediTaskID == stuck).values(status="registered")
        )
        conn.execute(
            task_params.update()
            .where(task_params.c.jediTaskID == stuck)
            .values(taskParams=json.dumps({"taskName": "x"}))
        )
    manage_tasks(rt)
    assert _status(rt, stuck) == "broken"


def test_concurrent_task_managers_never_double_work(make_runtime: Any, db_url: str) -> None:
    """Several nodes' task managers at once: every input file gets exactly one job."""
    import threading

    from pandawms.core.tasks.generate import advance_task

    rt = make_runtime(db_url, task_jobs_per_pass=7)
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params("user.jdoe.t9/", nEvents=60), JANE).data
    errors: list[BaseException] = []

    def node() -> None:
        try:
            for _ in range(12):
                advance_task(rt, task_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [e for e in errors if status_of(e) != 409], errors
    while advance_task(rt, task_id):
        pass
    with rt.engine.connect() as conn:
        files = conn.execute(
            select(task_files.c.PandaID).where(
                task_files.c.jediTaskID == task_id, task_files.c.type == "pseudo_input"
            )
        ).all()
        n_jobs = conn.execute(select(func.count()).where(jobs.c.jediTaskID == task_id)).scalar_one()
        serials = conn.execute(
            select(tasks_table.c.nextSerialNr).where(tasks_table.c.jediTaskID == task_id)
        ).scalar_one()
    assert len(files) == 60 and len({f[0] for f in files}) == 60 and None not in {f[0] for f in files}
    assert n_jobs == 60 and serials == 61
