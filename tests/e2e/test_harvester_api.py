"""The Harvester v1 API on the wire, byte for byte as Harvester's PanDA communicator sends it.

Harvester (HSF/harvester ``pandaharvester/harvestercommunicator/panda_communicator.py``) is not
installable from the package index, so these tests replay its requests: ``requests`` with
``Accept: application/json`` and ``Connection: close`` on every call, a JSON body with
``Content-Type: application/json`` on POST, query parameters on GET (lists as repeated keys),
and the payload shapes of ``WorkSpec.convert_to_propagate`` and ``JobSpec``. The same cycle is
run with the real communicator itself by ``test_harvester_real.py``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

HID = "hv-wire"
HEADERS = {"Accept": "application/json", "Connection": "close"}


def post(server: ServerProcess, path: str, data: dict[str, Any]) -> httpx.Response:
    """``request_ssl("POST", path, data)``."""
    return httpx.post(
        f"{server.base}/api/v1/{path}",
        content=json.dumps(data),
        headers={**HEADERS, "Content-Type": "application/json"},
        timeout=30,
    )


def get(server: ServerProcess, path: str, data: dict[str, Any]) -> httpx.Response:
    """``request_ssl("GET", path, data)``."""
    return httpx.get(f"{server.base}/api/v1/{path}", params=data, headers=HEADERS, timeout=30)


def ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True, body
    return body["data"]


def _submit(server: ServerProcess, count: int) -> list[int]:
    jobs = [make_job(site="HV_QUEUE", prodSourceLabel="managed") for _ in range(count)]
    reply = httpx.post(
        f"{server.base}/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
    )
    return [a[0] for a in reply.json()["data"]]


def test_a_whole_harvester_cycle(server: ServerProcess) -> None:
    ids = _submit(server, 3)
    assert ok(get(server, "system/is_alive", {})) is None
    # is_alive(): datetimes arrive as "datetime/%Y-%m-%d %H:%M:%S.%f"
    beat = {"startTime": "datetime/2026-11-24 09:00:00.000000", "sw_version": "0.6.2", "commit_stamp": "abc"}
    assert ok(post(server, "harvester/heartbeat", {"harvester_id": HID, "data": beat})) is None
    assert ok(get(server, "harvester/get_current_worker_id", {"harvester_id": HID})) is None

    got = ok(
        post(
            server,
            "pilot/acquire_jobs",
            {
                "site_name": "HV_QUEUE",
                "node": "hv-node",
                "prod_source_label": "managed",
                "computing_element": "hv-ce",
                "n_jobs": 3,
                "scheduler_id": f"harvester-{HID}",
            },
        )
    )
    assert got["StatusCode"] == 0 and sorted(j["PandaID"] for j in got["jobs"]) == ids

    # update_workers(): WorkSpec.convert_to_propagate() of each worker
    workers = [
        {
            "workerID": 100 + n,
            "batchID": f"cluster.{n}",
            "queueName": "HV_QUEUE",
            "status": "running",
            "computingSite": "HV_QUEUE",
            "nCore": 8,
            "submitTime": "datetime/2026-11-24 10:00:00.000000",
            "startTime": "datetime/2026-11-24 10:01:00.500000",
            "jobType": "managed",
            "resourceType": "MCORE",
            "nJobs": 1,
            "computingElement": "hv-ce",
            "syncLevel": 0,
            "submissionHost": "submit01",
            "harvesterHost": "harvester01",
            "minRamCount": 16000,
            "pandaid_list": [panda_id],
            "stdOut": f"https://logs.example.org/{n}.out",
        }
        for n, panda_id in enumerate(ids)
    ]
    assert (
        ok(post(server, "harvester/update_workers", {"harvester_id": HID, "workers": workers})) == [True] * 3
    )
    assert ok(get(server, "harvester/get_current_worker_id", {"harvester_id": HID})) == 102

    # update_jobs(): pilot/update_jobs_bulk with JobSpec attributes in snake case
    job_list = [
        {
            "start_time": "2026-11-24 10:02:00",
            "cpu_consumption_time": 12,
            "job_id": panda_id,
            "site_name": "HV_QUEUE",
            "job_status": "running",
            "job_sub_status": None,
            "attempt_nr": 0,
            "core_count": 8,
            "token": "pilot-token",  # forwarded by Harvester, nothing to store
        }
        for panda_id in ids
    ]
    results = ok(post(server, "pilot/update_jobs_bulk", {"job_list": job_list, "harvester_id": HID}))
    assert [r["success"] for r in results] == [True] * 3
    assert [r["data"] for r in results] == [{"StatusCode": 0, "command": "NULL"}] * 3
    # check_jobs(): job/get_status with repeated job_ids keys
    statuses = ok(get(server, "job/get_status", {"job_ids": ids}))
    assert [s["status"] for s in statuses] == ["running"] * 3

    # update_worker_stats(): statistics is a JSON string
    stats = json.dumps({"managed": {"MCORE": {"running": 3, "submitted": 2}}})
    reply = post(
        server,
        "harvester/report_worker_statistics",
        {"harvester_id": HID, "panda_queue": "HV_QUEUE", "statistics": stats},
    )
    assert ok(reply) is None and reply.json()["message"] == "OK"
    assert ok(get(server, "harvester/get_worker_statistics", {})) == {
        "HV_QUEUE": {HID: {"managed": {"MCORE": {"running": 3, "submitted": 2}}}}
    }

    # the propagator's service metrics and the agents' dialog messages
    metrics = [["2026-11-24 10:05:00.000001", "harvester01", json.dumps({"rss_mib": 2737.4, "cpu_pc": 15.2})]]
    assert ok(
        post(server, "harvester/update_service_metrics", {"harvester_id": HID, "metrics": metrics})
    ) == [True]
    dialogs = [
        {
            "diagID": 1,
            "moduleName": "submitter",
            "identifier": "HV_QUEUE",
            "creationTime": "2026-11-24 10:05:01.000000",
            "messageLevel": "ERROR",
            "diagMessage": "failed to submit 2 workers",
        }
    ]
    assert ok(post(server, "harvester/add_dialogs", {"harvester_id": HID, "dialogs": dialogs})) is None
    assert (
        ok(post(server, "harvester/add_dialogs", {"harvester_id": HID, "dialogs": dialogs})) is None
    )  # resent

    # the operator kills one job: the worker running it gets a kill command, once
    assert ok(post(server, "job/kill", {"job_ids": [ids[0]]})) == [True]
    commands = ok(post(server, "harvester/acquire_commands", {"harvester_id": HID, "n_commands": 20}))
    assert [(c["command"], c["params"], c["ack_requested"]) for c in commands] == [
        ("SYNC_WORKERS_KILL", [100], True)
    ]
    assert set(commands[0]) == {"command_id", "command", "params", "ack_requested", "creation_date"}
    assert ok(post(server, "harvester/acquire_commands", {"harvester_id": HID, "n_commands": 20})) == []
    assert (
        ok(post(server, "harvester/acknowledge_commands", {"command_ids": [commands[0]["command_id"]]}))
        is None
    )
    # the job's next check tells Harvester the same thing the pilot hears
    assert ok(get(server, "job/get_status", {"job_ids": [ids[0]]}))[0]["command"] == "tobekilled"

    # the worker of the second job dies and Harvester is sure: the job fails with code 300
    ended = {"workerID": 101, "status": "failed", "syncLevel": 1, "errorCode": 1, "diagMessage": "node lost"}
    assert ok(post(server, "harvester/update_workers", {"harvester_id": HID, "workers": [ended]})) == [True]
    described = ok(post(server, "job/get_description_incl_archive", {"job_ids": [ids[1]]}))[0]
    assert described["jobStatus"] == "failed" and described["taskBufferErrorCode"] == 300
    assert described["supErrorDiag"] == "Diag from worker : node lost"

    # the third finishes through Harvester: cancelled/missed arrive as failed, final as holding->final
    final = [
        {
            "job_id": ids[2],
            "site_name": "HV_QUEUE",
            "job_status": "finished",
            "attempt_nr": 0,
            "job_output_report": "{}",
            "meta_data": json.dumps({"exitCode": 0}),
        }
    ]
    results = ok(post(server, "pilot/update_jobs_bulk", {"job_list": final, "harvester_id": HID}))
    assert results[0]["success"] is True
    assert ok(get(server, "job/get_status", {"job_ids": [ids[2]]}))[0]["status"] == "finished"


def test_pilot_of_a_worker_links_its_jobs_and_reports_its_status(sqlite_server: ServerProcess) -> None:
    (panda_id,) = _submit(sqlite_server, 1)
    got = ok(
        post(
            sqlite_server,
            "pilot/acquire_jobs",
            {"site_name": "HV_QUEUE", "prod_source_label": "managed", "harvester_id": HID, "worker_id": 9},
        )
    )
    assert got["jobs"][0]["PandaID"] == panda_id
    assert ok(get(sqlite_server, "harvester/get_current_worker_id", {"harvester_id": HID})) == 9
    assert (
        ok(
            post(
                sqlite_server,
                "pilot/update_worker_status",
                {"worker_id": 9, "harvester_id": HID, "status": "started", "node_id": "wn7"},
            )
        )
        is None
    )
    unknown = post(
        sqlite_server,
        "pilot/update_worker_status",
        {"worker_id": 10, "harvester_id": HID, "status": "started"},
    ).json()
    assert unknown["success"] is False and "not known" in unknown["message"]
    # killing the job reaches the worker the pilot runs in
    assert ok(post(sqlite_server, "job/kill", {"job_ids": [panda_id]})) == [True]
    commands = ok(post(sqlite_server, "harvester/acquire_commands", {"harvester_id": HID, "n_commands": 5}))
    assert [c["params"] for c in commands] == [[9]]


def test_bad_input_gets_a_clear_error_and_changes_nothing(sqlite_server: ServerProcess) -> None:
    def refused(reply: httpx.Response, status: int, text: str) -> None:
        # As the real server: a bad argument, type or verb is HTTP 200 with success false.
        assert reply.status_code == status, reply.text
        body = reply.json()
        assert body["success"] is False and text in body["message"], body

    refused(
        post(sqlite_server, "harvester/update_workers", {"workers": []}),
        200,
        "missing required argument harvester_id",
    )
    refused(
        post(
            sqlite_server,
            "harvester/update_workers",
            {"harvester_id": HID, "workers": [{"workerID": 1, "status": "running"}, {"workerID": "x"}]},
        ),
        200,
        "worker 1: workerID must be an integer",
    )
    refused(
        post(sqlite_server, "harvester/update_workers", {"harvester_id": HID, "workers": {"workerID": 1}}),
        200,
        "must be a list",
    )
    refused(
        post(
            sqlite_server,
            "harvester/report_worker_statistics",
            {"harvester_id": HID, "panda_queue": "Q", "statistics": "{"},
        ),
        200,
        "statistics is not valid JSON",
    )
    refused(
        post(sqlite_server, "harvester/acquire_commands", {"harvester_id": HID, "n_commands": "ten"}),
        200,
        "n_commands must be an integer",
    )
    refused(
        post(sqlite_server, "harvester/acknowledge_commands", {"command_ids": ["a"]}),
        200,
        "command_ids must be an integer",
    )
    refused(
        post(sqlite_server, "harvester/heartbeat", {"harvester_id": HID, "data": [1]}),
        200,
        "data must be an object",
    )
    refused(get(sqlite_server, "harvester/heartbeat", {"harvester_id": HID}), 200, "expecting POST")
    refused(
        post(
            sqlite_server,
            "harvester/update_service_metrics",
            {"harvester_id": HID, "metrics": [["now", "h", "{}"]]},
        ),
        200,
        "creationTime is not a time",
    )
    refused(
        post(sqlite_server, "harvester/add_dialogs", {"harvester_id": HID, "dialogs": [{"diagID": "one"}]}),
        200,
        "diagID must be a non-negative integer",
    )
    refused(post(sqlite_server, "harvester/heartbeat", {"harvester_id": "x" * 51}), 200, "longer than 50")
    assert ok(get(sqlite_server, "harvester/get_current_worker_id", {"harvester_id": HID})) is None
    assert ok(get(sqlite_server, "harvester/get_worker_statistics", {})) == {}


def test_legacy_pilot_of_a_worker_is_linked_and_reports_its_status(server: ServerProcess) -> None:
    """Pilot 3 in a Harvester worker sends harvester_id/worker_id with getJob (pull mode), then
    updateWorkerPilotStatus: the jobs are linked to the worker and its pilot status kept."""
    from sqlalchemy import create_engine, select

    from pandawms.db.schema_workers import harvester_rel_jobs_workers, harvester_workers

    (panda_id,) = _submit(server, 1)
    accept = {"Accept": "application/json"}
    job = httpx.post(
        f"{server.base}/server/panda/getJob",
        data={
            "siteName": "HV_QUEUE",
            "prodSourceLabel": "managed",
            "node": "wn7",
            "harvester_id": HID,
            "worker_id": "77",
        },
        headers=accept,
    ).json()
    assert job["PandaID"] == panda_id
    for status in ("started", "finished"):
        reply = httpx.post(
            f"{server.base}/server/panda/updateWorkerPilotStatus",
            data={"harvesterID": HID, "workerID": "77", "status": status, "node_id": "wn7"},
            headers=accept,
        ).json()
        assert reply["StatusCode"] == 0, reply
    unknown = httpx.post(
        f"{server.base}/server/panda/updateWorkerPilotStatus",
        data={"harvesterID": HID, "workerID": "78", "status": "started"},
        headers=accept,
    ).json()
    assert unknown["StatusCode"] == 50 and "no worker 78" in unknown["errorDialog"]
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            links = (
                conn.execute(
                    select(harvester_rel_jobs_workers.c.PandaID).where(
                        harvester_rel_jobs_workers.c.workerID == 77
                    )
                )
                .scalars()
                .all()
            )
            worker = (
                conn.execute(select(harvester_workers).where(harvester_workers.c.workerID == 77))
                .mappings()
                .one()
            )
    finally:
        engine.dispose()
    assert links == [panda_id]
    assert worker["status"] == "running" and worker["pilotStatus"] == "finished" and worker["nodeID"] == "wn7"
    assert worker["pilotStartTime"] is not None and worker["pilotEndTime"] is not None
