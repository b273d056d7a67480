"""The Adder against a real Rucio server: outputs registered from the DDM outbox, outages, rules.

A task job finished by its pilot stays ``holding`` while its registration waits in the outbox.
With Rucio unreachable (a closed loopback port: a real connection refused) the operation is
retried with back-off, the job says why and a repeated final report changes nothing; once
Rucio answers the files are in the task's dataset (inside its container) with their checksums
and the job is finished; when the task is done its datasets are closed. A scope Rucio does not
know fails the job with the reason (the task retries the file, it does not fail). A task with a
destination elsewhere keeps its job ``transferring`` until the rule is satisfied.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from pandawms.core.jobs.ddm_outbox import REGISTERING, WAITING_RULE
from pandawms.core.jobs.dispatch import DispatchRequest, acquire_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks import read as tasks_read
from pandawms.core.tasks.inputs import resolve_inputs
from pandawms.core.tasks.outputs import backoff, process_outbox, rucio_names, watch_rules
from pandawms.core.tasks.params import plan_task
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_ddm import ddm_outbox
from pandawms.db.schema_tasks import task_files, task_status_log
from pandawms.ddm.rucio import RucioConfig, RucioDDM
from pandawms.model.identity import Identity
from tests.rucio_server import RucioServer, rucio_server, upload_dataset  # noqa: F401 - the session fixture

pytestmark = pytest.mark.slow

QUEUE = "ADDER_Q"
WRITE_RSE = "PANDAWMS_DISK_B"
JANE = Identity(dn="/DC=org/CN=Jane Doe", method="x509")


@pytest.fixture
def ddm_rt(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    make_runtime: Callable[..., Runtime],
    db_url: str,
) -> Runtime:
    """A Runtime with Rucio configured, on each database backend in turn."""
    pytest.importorskip("rucio.client", reason="rucio-clients is not installed (pip install -e '.[test]')")
    rt = make_runtime(
        db_url,
        ddm_rucio_host=rucio_server.url,
        ddm_rucio_account=rucio_server.account,
        ddm_rucio_username=rucio_server.username,
        ddm_rucio_password=rucio_server.password,
        ddm_retry_base=1,
        ddm_retry_max=4,
    )
    spec = {
        QUEUE: {
            "name": QUEUE,
            "status": "online",
            "state": "ACTIVE",
            "type": "unified",
            "corecount": 1,
            "maxrss": 4000,
            "maxtime": 7200,
            "astorages": {"pw": [WRITE_RSE], "pl": [WRITE_RSE]},
        }
    }
    load_queues(rt, json.dumps(spec))
    return rt


def _ddm(server: RucioServer, host: str | None = None) -> RucioDDM:
    return RucioDDM(
        RucioConfig(
            host=host or server.url,
            account=server.account,
            username=server.username,
            password=server.password,
            timeout=10,
        )
    )


def _params(base: str, destination: str | None = None, max_attempt: int = 3) -> dict[str, Any]:
    """prun --exec ... --outputs out.txt --nJobs 1 --outDS <base> (trimmed), to QUEUE."""
    output: dict[str, Any] = {
        "type": "template",
        "param_type": "output",
        "dataset": f"{base}_out.txt/",
        "container": f"{base}_out.txt/",
        "value": f"{base}.$JEDITASKID._${{SN/P}}.out.txt",
        "hidden": True,
    }
    if destination:
        output["destination"] = destination
    return {
        "taskName": f"{base}/",
        "uniqueTaskName": True,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "processingType": "panda-client-2.2.0-jedi-run",
        "site": QUEUE,
        "nEvents": 1,
        "nEventsPerJob": 1,
        "maxAttempt": max_attempt,
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
            output,
            {"type": "constant", "value": '-p "echo%20hello"'},
        ],
        "noInput": True,
    }


def _content(lfn: str) -> bytes:
    return f"the bytes of {lfn}\n".encode()


def _finish_one(rt: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dispatch the task's job and report it finished as the pilot does; (job, report)."""
    (job,) = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=1, prod_source_label="user"), JANE)
    update_job(rt, PilotUpdate(job["PandaID"], "running", job["attemptNr"]))
    report = {
        f["lfn"]: {
            # A malformed GUID from the pilot is left out of the catalogue, not an error.
            "guid": f.get("GUID") or "not-a-guid'\"",
            "fsize": len(_content(f["lfn"])),
            "adler32": f"{zlib.adler32(_content(f['lfn'])) & 0xFFFFFFFF:08x}",
        }
        for f in job["Files"]
        if f["type"] in ("output", "log")
    }
    result = update_job(
        rt, PilotUpdate(job["PandaID"], "finished", job["attemptNr"], report=json.dumps(report))
    )
    assert result.job_status == "holding", result
    return job, report


def _job(rt: Runtime, panda_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().one())


def _ops(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(ddm_outbox).order_by(ddm_outbox.c.id)).mappings()]


def _make_due(rt: Runtime) -> None:
    with write_tx(rt.engine) as conn:
        conn.execute(ddm_outbox.update().values(nextAttempt=dt.datetime(2000, 1, 1)))


def test_backoff_doubles_up_to_the_cap(ddm_rt: Runtime) -> None:
    assert [backoff(ddm_rt.settings, n) for n in (1, 2, 3, 4, 5, 60)] == [1, 2, 4, 4, 4, 4]


def test_rucio_names_of_task_datasets() -> None:
    container, dataset = rucio_names("user.jdoe.x_out.txt/", "user.jdoe.x_out.txt/", 42)
    assert (str(container), str(dataset)) == (
        "user.jdoe:user.jdoe.x_out.txt",
        "user.jdoe:user.jdoe.x_out.txt.42",
    )
    assert rucio_names("tests:plain.ds", None, 42) == (None, rucio_names("tests:plain.ds", None, 1)[1])


def test_outage_is_retried_then_outputs_registered_and_datasets_closed(
    ddm_rt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
) -> None:
    rt = ddm_rt
    base = f"user.jdoe.adder.{secrets.token_hex(4)}"
    task_id = tasks.submit_task(rt, _params(base), JANE).data
    manage_tasks(rt)
    job, report = _finish_one(rt)
    pid = job["PandaID"]
    assert _job(rt, pid)["jobSubStatus"] == REGISTERING
    (op,) = _ops(rt)
    assert (op["kind"], op["status"], op["PandaID"]) == ("register", "pending", pid)

    # Rucio unreachable: the operation waits (back-off), the job waits and says why.
    down = _ddm(rucio_server, "http://127.0.0.1:1")
    assert process_outbox(rt, ddm=down) == {"postponed": 1}
    (op,) = _ops(rt)
    assert op["status"] == "pending" and op["attempts"] == 1 and "cannot" in (op["lastError"] or "").lower()
    held = _job(rt, pid)
    assert held["jobStatus"] == "holding" and "registration attempt 1 failed" in held["ddmErrorDiag"]
    assert process_outbox(rt, ddm=down) == {}  # not due yet
    # A pilot repeating its final report changes nothing (no second registration).
    again = update_job(rt, PilotUpdate(pid, "finished", job["attemptNr"], report=json.dumps(report)))
    assert again.command == "alreadydone" and len(_ops(rt)) == 1
    time.sleep(1.1)
    assert process_outbox(rt, ddm=down) == {"postponed": 1}
    assert _ops(rt)[0]["attempts"] == 2

    # Rucio back: registered, the job finished.
    _make_due(rt)
    up = _ddm(rucio_server)
    assert process_outbox(rt, ddm=up) == {"finished": 1}
    done = _job(rt, pid)
    assert done["jobStatus"] == "finished" and done["jobSubStatus"] is None and done["ddmErrorDiag"] is None
    out_lfn = next(f["lfn"] for f in job["Files"] if f["type"] == "output")
    listed = up.list_files(f"user.jdoe:{base}_out.txt.{task_id}")
    assert [(f.name, f.size, f.adler32) for f in listed] == [
        (out_lfn, report[out_lfn]["fsize"], report[out_lfn]["adler32"])
    ]
    assert [f.name for f in up.list_files(f"user.jdoe:{base}_out.txt")] == [out_lfn]  # via the container
    assert up.list_replicas([f"user.jdoe:{out_lfn}"])[0].rses == [WRITE_RSE]
    log_lfn = next(f["lfn"] for f in job["Files"] if f["type"] == "log")
    assert [f.name for f in up.list_files(f"user.jdoe:{base}.log.{task_id}")] == [log_lfn]

    # The task ends done; its datasets are closed (its containers complete).
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"
    assert process_outbox(rt, ddm=up) == {"closed": 1}
    assert not up.dataset_info(f"user.jdoe:{base}_out.txt.{task_id}").is_open
    assert not up.dataset_info(f"user.jdoe:{base}.log.{task_id}").is_open


def test_a_refusal_fails_the_job_with_the_reason_not_the_task(
    ddm_rt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
) -> None:
    rt = ddm_rt
    base = f"user.nobody{secrets.token_hex(3)}.x"  # a scope Rucio does not know
    task_id = tasks.submit_task(rt, _params(base, max_attempt=2), JANE).data
    manage_tasks(rt)
    job, _ = _finish_one(rt)
    assert process_outbox(rt, ddm=_ddm(rucio_server)) == {"refused": 1}
    failed = _job(rt, job["PandaID"])
    assert failed["jobStatus"] == "failed" and failed["ddmErrorCode"] == 200
    assert "output registration refused" in failed["ddmErrorDiag"] and "Scope" in failed["ddmErrorDiag"]
    (op,) = _ops(rt)
    assert op["status"] == "failed" and op["lastError"]
    # The task goes on: its file is ready for another job.
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) in ("running", "ready")


def test_a_destination_keeps_the_job_transferring_until_its_files_are_there(
    ddm_rt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
) -> None:
    rt = ddm_rt
    base = f"user.jdoe.dest.{secrets.token_hex(4)}"
    task_id = tasks.submit_task(rt, _params(base, destination="PANDAWMS_DISK_A"), JANE).data
    manage_tasks(rt)
    job, _ = _finish_one(rt)
    up = _ddm(rucio_server)
    assert process_outbox(rt, ddm=up) == {"transferring": 1}
    waiting = _job(rt, job["PandaID"])
    assert (waiting["jobStatus"], waiting["jobSubStatus"]) == ("transferring", WAITING_RULE)
    dataset = f"user.jdoe:{base}_out.txt.{task_id}"
    (rule,) = up.list_rules(dataset)
    assert rule.rse_expression == "PANDAWMS_DISK_A"
    # No transfer daemon runs here: the rule waits, and so does the job (saying why).
    assert watch_rules(rt, ddm=up) == {"transferring": 1}
    assert "REPLICATING" in _job(rt, job["PandaID"])["ddmErrorDiag"]
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "running"
    # The transfer tool reports the copy done (as Rucio's conveyor would): the lock is OK.
    out_lfn = next(f["lfn"] for f in job["Files"] if f["type"] == "output")
    client = up._client()
    client.update_replicas_states("PANDAWMS_DISK_A", [{"scope": "user.jdoe", "name": out_lfn, "state": "A"}])
    assert watch_rules(rt, ddm=up) == {"finished": 1}
    assert _job(rt, job["PandaID"])["jobStatus"] == "finished"
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"


def test_an_input_without_replica_fails_the_file_not_the_task(
    ddm_rt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Any,
) -> None:
    """A file lost everywhere fails with the reason in the task's log; the others still run."""
    rt = ddm_rt
    tag = secrets.token_hex(4)
    dataset = f"data.{tag}.lossy"
    names = [f"{dataset}._{i:06d}" for i in range(3)]
    upload_dataset(
        rucio_server,
        tmp_path / "up",
        "PANDAWMS_DISK_A",
        "tests",
        dataset,
        {n: n.encode() * 3 for n in names},
        {},
    )
    up = _ddm(rucio_server)
    lost = names[1]
    up._client().update_replicas_states("PANDAWMS_DISK_A", [{"scope": "tests", "name": lost, "state": "U"}])
    item = {"type": "template", "param_type": "input", "value": '-i "${IN/T}"', "dataset": f"tests:{dataset}"}
    (part,) = resolve_inputs(
        rt, plan_task({"taskName": "user.jdoe.lossy/", "jobParameters": [item]}, "x"), up
    )
    assert part.lost == (lost,) and part.rses == ("PANDAWMS_DISK_A",)

    params = _params(f"user.jdoe.lossy.{tag}")
    params.pop("noInput")
    params.pop("nEvents")
    params.pop("nEventsPerJob")
    params["nFilesPerJob"] = 1
    params["jobParameters"].append(item)
    spec = {
        QUEUE: {
            "name": QUEUE,
            "status": "online",
            "state": "ACTIVE",
            "type": "unified",
            "astorages": {"pr": ["PANDAWMS_DISK_A"], "pw": [WRITE_RSE], "pl": [WRITE_RSE]},
        }
    }
    load_queues(rt, json.dumps(spec))
    task_id = tasks.submit_task(rt, params, JANE).data
    manage_tasks(rt)
    with rt.engine.connect() as conn:
        reasons = [r[0] or "" for r in conn.execute(select(task_status_log.c.reason))]
        files = dict(
            conn.execute(
                select(task_files.c.lfn, task_files.c.status).where(
                    task_files.c.jediTaskID == task_id, task_files.c.type == "input"
                )
            ).all()
        )
    assert any(f"no replica in the DDM: {lost}" in r for r in reasons), reasons
    assert files == {names[0]: "running", lost: "failed", names[2]: "running"}
    # The jobs' inputs name the RSE to read them from (ddmEndPointIn).
    got = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=5, prod_source_label="user"), JANE)
    assert len(got) == 2
    for job in got:
        (infile,) = [f for f in job["Files"] if f["type"] == "input"]
        assert infile["dispatchDBlockToken"] == "ddd:PANDAWMS_DISK_A"
    assert tasks_read.get_status(rt, task_id) == "running"


def test_a_task_retried_after_it_ended_reopens_its_datasets(
    ddm_rt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
) -> None:
    """One job fails for good, the task ends finished and its datasets are closed; pbook retry
    reopens them before the new job's outputs are registered, and closes them again at the end."""
    rt = ddm_rt
    base = f"user.jdoe.again.{secrets.token_hex(4)}"
    params = _params(base, max_attempt=1)
    params.update(nEvents=2)
    task_id = tasks.submit_task(rt, params, JANE).data
    manage_tasks(rt)
    got = acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=1, prod_source_label="user"), JANE)
    (failed_job,) = got
    update_job(rt, PilotUpdate(failed_job["PandaID"], "failed", failed_job["attemptNr"]))
    _finish_one(rt)
    up = _ddm(rucio_server)
    assert process_outbox(rt, ddm=up) == {"finished": 1}
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "finished"
    assert process_outbox(rt, ddm=up) == {"closed": 1}
    dataset = f"user.jdoe:{base}_out.txt.{task_id}"
    assert not up.dataset_info(dataset).is_open

    assert tasks.retry_task(rt, task_id, JANE).success
    manage_tasks(rt)  # the failed file's new job
    job, _ = _finish_one(rt)
    # The reopening comes first; the registration waits for it within the same pass.
    assert process_outbox(rt, ddm=up) == {"reopened": 1, "finished": 1}
    assert len(up.list_files(dataset)) == 2
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"
    assert process_outbox(rt, ddm=up) == {"closed": 1}
    assert not up.dataset_info(dataset).is_open
    assert [o["status"] for o in _ops(rt)] == ["done"] * 5
