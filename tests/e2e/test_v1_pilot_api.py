"""The v1 pilot/Harvester calls: acquire_jobs, update_job(s), statuses."""

from __future__ import annotations

import json

import httpx

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list


def _submit(base: str, *jobs: dict) -> list[int]:
    reply = httpx.post(
        base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
    ).json()
    return [a[0] for a in reply["data"]]


def test_acquire_update_and_status(server: ServerProcess) -> None:
    base = server.base + "/api/v1"
    ids = _submit(server.base, *[make_job(prodSourceLabel="managed", assignedPriority=p) for p in (1, 2, 3)])
    none = httpx.post(base + "/pilot/acquire_jobs", json={"site_name": "ELSEWHERE"}).json()
    assert none == {"success": False, "message": "No jobs in PanDA", "data": None}
    got = httpx.post(
        base + "/pilot/acquire_jobs",
        json={
            "site_name": "TEST_SITE",
            "n_jobs": 2,
            "prod_source_label": "managed",
            "scheduler_id": "harvester-h1",
            "node": "wn1",
        },
    ).json()
    assert got["success"] and got["data"]["StatusCode"] == 0
    assert [j["PandaID"] for j in got["data"]["jobs"]] == [ids[2], ids[1]]
    upd = httpx.post(
        base + "/pilot/update_job",
        json={"job_id": ids[2], "job_status": "running", "attempt_nr": 0, "core_count": 8},
    ).json()
    assert upd == {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}
    bulk = httpx.post(
        base + "/pilot/update_jobs_bulk",
        json={
            "job_list": [
                {"job_id": ids[1], "job_status": "starting"},
                {"job_id": ids[2], "job_status": "finished", "job_output_report": "{}"},
                {"job_id": ids[0], "job_status": "nonsense"},
            ]
        },
    ).json()
    assert [r["success"] for r in bulk["data"]] == [True, True, False]
    unknown = max(ids) + 1_000_000  # PandaIDs come from a sequence that other tests advance
    statuses = httpx.get(
        base + "/pilot/get_job_status", params={"job_ids": [ids[2], ids[1], unknown]}
    ).json()["data"]
    assert statuses == [
        {"job_id": ids[2], "status": "finished", "attempt_number": 0},
        {"job_id": ids[1], "status": "starting", "attempt_number": 0},
        {"job_id": unknown, "status": "not found", "attempt_number": 0},
    ]
    check = httpx.get(base + "/job/get_status", params={"job_ids": f"{ids[0]},{ids[2]},{unknown}"}).json()[
        "data"
    ]
    assert check == [
        {"status": "activated", "command": None},
        {"status": "finished", "command": None},
        {"status": "unknown", "command": "tobekilled"},
    ]
    described = httpx.post(base + "/job/get_description", json={"job_ids": [ids[2]]}).json()["data"][0]
    assert described["actualCoreCount"] == 8 and described["schedulerID"] == "harvester-h1"
    assert set(described["modificationTime"]) == {"__datetime__"}
