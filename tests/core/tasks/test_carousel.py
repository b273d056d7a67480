"""The data carousel against a real Rucio server: a task over a dataset that is only on tape.

The dataset is uploaded to the tape RSE with Rucio's upload client. The task is refined into
``staging`` with its files ``staging`` and a queued request; the carousel pass makes a rule
from the tape to the disk RSE the queue reads. No transfer service runs here, so the test does
its work (tests/rucio_server.py: copy the files, mark the replicas available), one file first:
that file alone becomes ready and gets a job while the others are still on tape; then the rest,
and the request is done. Operators' commands (data_carousel/*) act on the same requests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks import carousel_ops
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks.carousel import list_requests, request_staging, run_carousel
from pandawms.core.tasks.inputs import StreamFiles, ddm_for
from pandawms.core.tasks.params import InputStream
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_carousel import data_carousel_relations, data_carousel_requests
from pandawms.db.schema_tasks import task_dataset_rses, task_files
from pandawms.db.schema_tasks import tasks as tasks_table
from pandawms.ddm import FileInfo, RuleState
from pandawms.model.errors import Invalid
from pandawms.model.identity import Identity
from tests.rucio_server import (  # noqa: F401 - the session fixture
    RucioServer,
    complete_transfers,
    rucio_server,
    run_judge_cleaner,
    upload_dataset,
)

pytestmark = pytest.mark.slow

SCOPE = "tests"
QUEUE = "CAROUSEL_Q"
JANE = Identity(dn="/DC=org/CN=Jane Doe", roles=frozenset({"user"}))


def carousel_runtime(
    server: RucioServer, make_runtime: Callable[..., Runtime], url: str, **overrides: object
) -> Runtime:
    """A Runtime whose DDM is the test Rucio, with one queue reading both disk RSEs."""
    pytest.importorskip("rucio.client", reason="rucio-clients is not installed (pip install -e '.[test]')")
    rt = make_runtime(
        url,
        ddm_rucio_host=server.url,
        ddm_rucio_account=server.account,
        ddm_rucio_username=server.username,
        ddm_rucio_password=server.password,
        **overrides,
    )
    queue = {
        "name": QUEUE,
        "status": "online",
        "state": "ACTIVE",
        "type": "unified",
        "corecount": 1,
        "astorages": {"pr": ["PANDAWMS_DISK_A", "PANDAWMS_DISK_B"], "pw": ["PANDAWMS_DISK_B"]},
    }
    load_queues(rt, json.dumps({QUEUE: queue}), replace=False)
    return rt


@pytest.fixture
def crt(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    make_runtime: Callable[..., Runtime],
    db_url: str,
) -> Runtime:
    """On every database backend: the requests, relations and file releases are plain SQL."""
    return carousel_runtime(rucio_server, make_runtime, db_url)


def task_params(dataset: str, name: str) -> dict[str, Any]:
    """What prun --exec "echo %IN" --inDS <dataset> --nFilesPerJob 1 --noBuild sends (trimmed)."""
    return {
        "taskName": f"user.jdoe.{name}/",
        "uniqueTaskName": True,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "processingType": "panda-client-2.2.0-jedi-run",
        "nFilesPerJob": 1,
        "sourceURL": "http://127.0.0.1:25080",
        "log": {
            "dataset": f"user.jdoe.{name}.log/",
            "container": f"user.jdoe.{name}.log/",
            "type": "template",
            "param_type": "log",
            "value": f"user.jdoe.{name}.log.$JEDITASKID.${{SN}}.log.tgz",
        },
        "jobParameters": [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": '-p "echo%20%IN"'},
            {
                "type": "template",
                "param_type": "input",
                "value": '-i "${IN/T}"',
                "dataset": f"{SCOPE}:{dataset}",
                "expand": True,
            },
        ],
    }


def on_tape(server: RucioServer, tmp_path: Path, count: int = 3) -> tuple[str, list[str]]:
    tag = secrets.token_hex(4)
    dataset = f"data.{tag}.tape"
    files = {f"data.{tag}._{i:06d}.root": os.urandom(300 + i) for i in range(count)}
    upload_dataset(server, tmp_path / f"up-{tag}", "PANDAWMS_TAPE", SCOPE, dataset, files, {})
    return dataset, sorted(files)


def _task(rt: Runtime, task_id: int) -> dict[str, Any]:
    with read_tx(rt.engine) as conn:
        return dict(
            conn.execute(select(tasks_table).where(tasks_table.c.jediTaskID == task_id)).mappings().one()
        )


def _file_states(rt: Runtime, task_id: int) -> dict[str, str]:
    with read_tx(rt.engine) as conn:
        rows = conn.execute(
            select(task_files.c.lfn, task_files.c.status).where(
                task_files.c.jediTaskID == task_id, task_files.c.type == "input"
            )
        )
        return {str(lfn): str(status) for lfn, status in rows}


def _job_inputs(rt: Runtime, task_id: int) -> list[str]:
    with read_tx(rt.engine) as conn:
        ids = [int(r[0]) for r in conn.execute(select(jobs.c.PandaID).where(jobs.c.jediTaskID == task_id))]
        rows = conn.execute(
            select(task_files.c.lfn).where(task_files.c.PandaID.in_(ids), task_files.c.type == "input")
        )
        return sorted(str(r[0]) for r in rows)


def test_a_task_over_tape_data_waits_staging_and_gets_jobs_as_files_arrive(
    crt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    dataset, names = on_tape(rucio_server, tmp_path)
    reply = tasks.submit_task(crt, task_params(dataset, "tape1"), JANE)
    assert reply.success, reply
    task_id = int(reply.data)
    manage_tasks(crt)
    assert _task(crt, task_id)["status"] == "staging"
    assert set(_file_states(crt, task_id).values()) == {"staging"}
    (request,) = list_requests(crt, task_id=task_id)
    assert (request.dataset, request.status, request.source_rse) == (
        f"{SCOPE}:{dataset}",
        "queued",
        "PANDAWMS_TAPE",
    )

    # The pass makes a rule from the tape to the disk the queue reads (the most read one).
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    assert (request.status, request.destination_rse, request.total_files) == ("staging", "PANDAWMS_DISK_A", 3)
    rule = ddm_for(crt).get_rule(request.ddm_rule_id or "")
    assert (rule.state, rule.rse_expression, rule.locks_replicating) == (
        RuleState.REPLICATING,
        "PANDAWMS_DISK_A",
        3,
    )
    manage_tasks(crt)
    assert _task(crt, task_id)["status"] == "staging" and not _job_inputs(crt, task_id)

    # One file arrives: it alone is released and gets a job; the task runs while the rest stage.
    complete_transfers(rucio_server, tmp_path / "t1", "PANDAWMS_TAPE", "PANDAWMS_DISK_A", SCOPE, names[:1])
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    assert (request.status, request.staged_files) == ("staging", 1)
    assert _file_states(crt, task_id) == {names[0]: "ready", names[1]: "staging", names[2]: "staging"}
    assert _task(crt, task_id)["status"] == "ready"
    manage_tasks(crt)
    assert _task(crt, task_id)["status"] == "running"
    assert _job_inputs(crt, task_id) == names[:1]
    with read_tx(crt.engine) as conn:
        where = {
            r[0]
            for r in conn.execute(
                select(task_dataset_rses.c.rse).where(task_dataset_rses.c.jediTaskID == task_id)
            )
        }
        site = conn.execute(select(jobs.c.computingSite).where(jobs.c.jediTaskID == task_id)).scalar_one()
    assert where == {"PANDAWMS_DISK_A"} and site == QUEUE

    # The rest arrive: the rule is satisfied, the request done, every file has its job.
    complete_transfers(rucio_server, tmp_path / "t2", "PANDAWMS_TAPE", "PANDAWMS_DISK_A", SCOPE, names[1:])
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    assert (request.status, request.staged_files, request.staged_size) == ("done", 3, request.dataset_size)
    assert ddm_for(crt).get_rule(request.ddm_rule_id or "").state is RuleState.OK
    manage_tasks(crt)
    assert _job_inputs(crt, task_id) == names

    # A second task over the same dataset joins the done request (the data is on disk now).
    reply = tasks.submit_task(crt, task_params(dataset, "tape2"), JANE)
    manage_tasks(crt)
    assert _task(crt, int(reply.data))["status"] == "running"
    assert len(list_requests(crt)) == 1


def test_a_killed_task_cancels_its_request(
    crt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    dataset, _ = on_tape(rucio_server, tmp_path, count=1)
    task_id = int(tasks.submit_task(crt, task_params(dataset, "killed"), JANE).data)
    manage_tasks(crt)
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    assert request.status == "staging"
    assert tasks.kill_task(crt, task_id, JANE).success
    manage_tasks(crt)
    assert _task(crt, task_id)["status"] == "aborted"
    assert run_carousel(crt)["cancelled"] == 1
    (request,) = list_requests(crt, task_id=task_id)
    assert request.status == "cancelled" and request.end_time


def test_a_task_paused_while_staging_resumes_and_runs(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    make_runtime: Callable[..., Runtime],
    tmp_path: Path,
) -> None:
    """Files released while the task is paused: once resumed it is ready, not stuck in staging."""
    rt = carousel_runtime(rucio_server, make_runtime, f"sqlite:///{tmp_path / 'pause.sqlite'}")
    dataset, names = on_tape(rucio_server, tmp_path, count=1)
    task_id = int(tasks.submit_task(rt, task_params(dataset, "paused"), JANE).data)
    manage_tasks(rt)
    run_carousel(rt)
    assert tasks.pause_task(rt, task_id, JANE).success
    complete_transfers(rucio_server, tmp_path / "t", "PANDAWMS_TAPE", "PANDAWMS_DISK_A", SCOPE, names)
    run_carousel(rt)
    assert _task(rt, task_id)["status"] == "paused" and _file_states(rt, task_id) == {names[0]: "ready"}
    assert tasks.resume_task(rt, task_id, JANE).success
    assert _task(rt, task_id)["status"] == "staging"
    manage_tasks(rt)
    assert _task(rt, task_id)["status"] == "running" and _job_inputs(rt, task_id) == names


def test_operator_commands_on_requests(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    make_runtime: Callable[..., Runtime],
    tmp_path: Path,
) -> None:
    """force_to_staging, change_staging_source, change_staging_destination, retire_unused."""
    rt = carousel_runtime(
        rucio_server, make_runtime, f"sqlite:///{tmp_path / 'ops.sqlite'}", carousel_max_staging=0
    )
    dataset, names = on_tape(rucio_server, tmp_path, count=2)
    did = f"{SCOPE}:{dataset}"
    task_id = int(tasks.submit_task(rt, task_params(dataset, "ops"), JANE).data)
    manage_tasks(rt)
    run_carousel(rt)
    (request,) = list_requests(rt, task_id=task_id)
    assert request.status == "queued"  # no room: carousel_max_staging is 0
    rid = request.request_id

    # With room but no disk to stage to, the task says why it waits.
    nowhere = dataclasses.replace(rt.settings, carousel_max_staging=10, carousel_destinations="NO_SUCH_RSE")
    run_carousel(Runtime(engine=rt.engine, settings=nowhere))
    assert "no destination RSE" in (_task(rt, task_id)["errorDialog"] or "")
    assert list_requests(rt, task_id=task_id)[0].status == "queued"

    missing = carousel_ops.force_to_staging(rt, 10**9, None)
    assert (missing.success, missing.message) == (False, "failed to get corresponding request")
    with pytest.raises(Invalid):
        carousel_ops.force_to_staging(rt, None, "x" * 300)
    # A queued request: no other tape holds the dataset.
    reply = carousel_ops.change_staging_source(rt, rid, None)
    assert not reply.success and "has no other source RSE available" in reply.message

    reply = carousel_ops.force_to_staging(rt, None, did)
    assert reply.success and reply.message == "status has become staging"
    assert _task(rt, task_id)["errorDialog"] is None
    assert (
        reply.data["request_id"] == rid and reply.data["dataset"] == did and reply.data["status"] == "staging"
    )
    first_rule = reply.data["ddm_rule_id"]
    again = carousel_ops.force_to_staging(rt, rid, None)
    assert (
        not again.success
        and again.message == f"failed to stage request_id={rid} : status=staging not queued; skipped"
    )

    # Staging: the rule's source expression is dropped (any tape may serve it); no other tape to name.
    reply = carousel_ops.change_staging_source(rt, rid, None)
    assert (reply.success, reply.message) == (True, "status=staging source replica expression is dropped")
    assert reply.data == {
        "request_id": rid,
        "dataset": did,
        "source_rse": "PANDAWMS_TAPE",
        "ddm_rule_id": first_rule,
    }
    reply = carousel_ops.change_staging_source(rt, rid, None, source_rse="PANDAWMS_DISK_B")
    assert not reply.success and "has no other source RSE available" in reply.message

    # Another destination: a new request to the other disk; the old one cancelled, its rule expiring.
    reply = carousel_ops.change_staging_destination(rt, None, did)
    assert reply.success and reply.message == "new request resubmitted, destination changed", reply
    new_id = reply.data["new_request_id"]
    assert reply.data == {"request_id": rid, "new_request_id": new_id, "dataset": did}
    (new,) = list_requests(rt, task_id=task_id)
    assert (new.request_id, new.status, new.destination_rse) == (new_id, "staging", "PANDAWMS_DISK_B")
    assert new.params["excluded_dst_list"] == ["PANDAWMS_DISK_A"] and new.params["resub_from"] == rid
    assert [r.status for r in list_requests(rt) if r.request_id == rid] == ["cancelled"]
    # No third disk to go to.
    reply = carousel_ops.change_staging_destination(rt, new_id, None)
    assert not reply.success and "no other available destination RSE" in reply.message

    complete_transfers(rucio_server, tmp_path / "t", "PANDAWMS_TAPE", "PANDAWMS_DISK_B", SCOPE, names)
    run_carousel(rt)
    manage_tasks(rt)
    assert _job_inputs(rt, task_id) == names
    with read_tx(rt.engine) as conn:
        where = {
            r[0]
            for r in conn.execute(
                select(task_dataset_rses.c.rse).where(task_dataset_rses.c.jediTaskID == task_id)
            )
        }
    assert where == {"PANDAWMS_DISK_B"}

    # Retire: not while a task uses it; once the task has ended, the request and its rule go.
    reply = carousel_ops.retire_unused(rt, new_id, None)
    assert (
        not reply.success
        and reply.message
        == f"failed to retire request_id={new_id} : still has 1 active related tasks ; skipped"
    )
    assert tasks.kill_task(rt, task_id, JANE).success
    manage_tasks(rt)
    manage_tasks(rt)
    assert _task(rt, task_id)["status"] == "aborted"
    reply = carousel_ops.retire_unused(rt, None, did)
    assert (reply.success, reply.message) == (True, "retired successfully"), reply
    assert reply.data == {
        "request_id": new_id,
        "dataset": did,
        "status": "retired",
        "ddm_rule_id": new.ddm_rule_id,
    }
    reply = carousel_ops.retire_unused(rt, rid, None)
    assert reply.message == f"failed to retire request_id={rid} : status is cancelled, not done ; skipped"


def test_a_done_request_whose_data_left_disk_is_replaced(sqlite_rt: Runtime) -> None:
    """Refining over a dataset on tape only whose request says done: that one is retired, a new one queued."""
    now = utcnow()
    part = StreamFiles(InputStream("tests:data.old"), [FileInfo("tests", "f1", 10)], (), ("PANDAWMS_TAPE",))
    with write_tx(sqlite_rt.engine) as conn:
        conn.execute(
            data_carousel_requests.insert().values(
                request_id=7,
                dataset="tests:data.old",
                status="done",
                creation_time=now,
                modification_time=now,
            )
        )
        conn.execute(data_carousel_relations.insert().values(request_id=7, task_id=1))
        (new_id,) = request_staging(conn, {"jediTaskID": 2}, [part], now)
    requests = {r.request_id: r for r in list_requests(sqlite_rt)}
    assert requests[7].status == "retired" and requests[7].params["retire_reason"] == "replicas_gone"
    assert (requests[new_id].status, requests[new_id].source_rse) == ("queued", "PANDAWMS_TAPE")
    assert [r.request_id for r in list_requests(sqlite_rt, task_id=2)] == [new_id]


def test_a_rule_gone_from_rucio_cancels_the_request_and_an_operator_restages_it(
    crt: Runtime,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    dataset, _ = on_tape(rucio_server, tmp_path, count=1)
    task_id = int(tasks.submit_task(crt, task_params(dataset, "gone"), JANE).data)
    manage_tasks(crt)
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    ddm = ddm_for(crt)
    # The rule expires in Rucio (lifetime over) and its judge-cleaner removes it.
    ddm.update_rule(request.ddm_rule_id or "", {"lifetime": 1})
    time.sleep(2)
    run_judge_cleaner(rucio_server)
    run_carousel(crt)
    (request,) = list_requests(crt, task_id=task_id)
    assert request.status == "cancelled" and request.params["rule_unfound"] is True
    task = _task(crt, task_id)
    assert task["status"] == "staging" and "not found, request cancelled" in task["errorDialog"]
    reply = carousel_ops.change_staging_destination(crt, request.request_id, None)
    assert reply.success, reply
    (new,) = list_requests(crt, task_id=task_id)
    assert (new.status, new.destination_rse) == ("staging", "PANDAWMS_DISK_B")
    assert _task(crt, task_id)["errorDialog"] is None
