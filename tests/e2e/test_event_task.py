"""An event-service task end to end on the real server: prun's task parameters with the event
service's keys, submitted by panda-client's Client.insertTaskParams, consumers run over HTTP as pilots do, one of them killed mid-way, a merge job,
the task done; the monitor and the CLI show the ranges.

Two consumers share each job set's ranges. The first consumer of job set A takes two ranges and
goes silent: the watcher fails it after its heartbeat timeout (10 s here), the ``event_ranges``
periodic task returns its ranges to the pool, and the other consumer finishes them. Once every
range finished the task manager makes the job set's merge job, which a pilot runs like any job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pandawms.config import load_settings
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from tests.conftest import ServerProcess
from tests.core.tasks.test_tasks import QUEUE, prun_params
from tests.e2e.clients import client_env, run_client
from tests.e2e.test_prun import CLAIMS

JSON = {"Accept": "application/json"}

_SUBMIT = r"""
import json
from pandaclient import Client
print("RESULT:" + json.dumps(Client.insertTaskParams(json.loads(%(params)r))))
"""


def _queue(db_url: str, tmp: Path) -> None:
    rt = Runtime.from_settings(load_settings(None, {"db_url": db_url, "data_dir": str(tmp)}))
    try:
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
    finally:
        rt.engine.dispose()


def _get_job(base: str, node: str) -> dict[str, Any]:
    return httpx.post(
        base + "/server/panda/getJob",
        headers=JSON,
        data={"siteName": QUEUE, "prodSourceLabel": "user", "node": node},
        timeout=60,
    ).json()


def _update(base: str, job: dict[str, Any], state: str) -> None:
    data: dict[str, Any] = {"jobId": job["PandaID"], "state": state, "attemptNr": job["attemptNr"]}
    if state == "finished":
        files = [lfn for lfn in job["outFiles"].split(",") if lfn]
        data["xml"] = json.dumps({lfn: {"guid": "", "fsize": 10, "adler32": "0a0b0c0d"} for lfn in files})
    reply = httpx.post(base + "/server/panda/updateJob", headers=JSON, data=data, timeout=60).json()
    assert reply["StatusCode"] == 0, reply


def _ranges(base: str, job: dict[str, Any], n: int) -> list[dict[str, Any]]:
    reply = httpx.post(
        base + "/server/panda/getEventRanges",
        headers=JSON,
        data={"pandaID": job["PandaID"], "jobsetID": job["jobsetID"], "taskID": job["taskID"], "nRanges": n},
        timeout=60,
    ).json()
    assert reply["StatusCode"] == 0, reply
    return list(reply["eventRanges"])


def _finish_ranges(base: str, ranges: list[dict[str, Any]]) -> None:
    chunk = {
        "zipFile": {"numEvents": len(ranges), "objstoreID": 9, "lfn": f"zip.{ranges[0]['eventRangeID']}.tar"},
        "eventRanges": [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in ranges],
    }
    reply = httpx.post(
        base + "/server/panda/updateEventRanges",
        headers=JSON,
        data={"eventRanges": json.dumps([chunk]), "version": 1},
        timeout=60,
    ).json()
    assert reply["StatusCode"] == 0 and reply["Returns"] == [True] * len(ranges), reply


def _wait(condition: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def test_event_service_task_runs_to_done_with_a_consumer_killed_mid_way(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'es.sqlite'}"
    server = start_server(
        db_url,
        {
            "PANDA_DAEMON_PERIODS": "task_manager=1,watcher=1,event_ranges=1",
            "PANDA_TIMEOUT_RUNNING": "10",
        },
    )
    _queue(db_url, tmp_path)
    base = server.base
    params = prun_params(
        "user.jdoe.es.e2e/",
        nEvents=40,
        nEventsPerJob=20,
        nEventsPerRange=5,
        nEsConsumers=2,
        esProcessingType="sim",
    )
    # Submitted by panda-client's own Client.insertTaskParams, the call prun makes (panda-client
    # 2.2.0's prun has no event-service options; its users set these keys in the parameters).
    status, (code, message) = run_client(
        _SUBMIT % {"params": json.dumps(params)}, client_env(base, tmp_path, CLAIMS)
    )
    assert status == 0 and code == 0, message
    task_id = int(message.split("jediTaskID=")[1])

    consumers = [_get_job(base, f"wn{i}") for i in range(4)]
    assert all(j["StatusCode"] == 0 and j["eventService"] == "True" for j in consumers), consumers
    jobsets: dict[int, list[dict[str, Any]]] = {}
    for job in consumers:
        _update(base, job, "running")
        jobsets.setdefault(int(job["jobsetID"]), []).append(job)
    (a_set, a_jobs), (b_set, b_jobs) = sorted(jobsets.items())
    victim, survivor = sorted(a_jobs, key=lambda j: j["PandaID"])

    lost = _ranges(base, victim, 2)  # and then the victim's node dies: no report, no heartbeat
    assert len(lost) == 2
    for job in b_jobs:
        while got := _ranges(base, job, 1):
            _finish_ranges(base, got)
        _update(base, job, "finished")
    # the survivor works through the pool, and through the victim's ranges once they return
    done: list[str] = []
    deadline = time.monotonic() + 120
    while len(done) < 4 and time.monotonic() < deadline:
        got = _ranges(base, survivor, 2)
        if not got:
            _update(base, survivor, "running")  # its heartbeat while it waits
            time.sleep(0.5)
            continue
        _finish_ranges(base, got)
        done += [r["eventRangeID"] for r in got]
    assert len(done) == 4, done
    victim_positions = {tuple(r["eventRangeID"].split("-")[2:4]) for r in lost}
    assert victim_positions <= {tuple(rid.split("-")[2:4]) for rid in done}
    _update(base, survivor, "finished")
    victim_now = httpx.get(base + "/api/v1/job/get_status", params={"job_ids": [victim["PandaID"]]}).json()
    assert victim_now["data"][0]["status"] == "failed"

    merges: list[dict[str, Any]] = []

    def two_merges() -> bool:
        job = _get_job(base, "wn-merge")
        if job["StatusCode"] == 0:
            merges.append(job)
        return len(merges) == 2

    _wait(two_merges)
    assert sorted(int(m["jobsetID"]) for m in merges) == sorted([a_set, b_set])
    assert all(m.get("eventServiceMerge") == "True" for m in merges)
    for merge in merges:
        _update(base, merge, "running")
        _update(base, merge, "finished")
    _wait(
        lambda: (
            httpx.get(base + "/api/v1/task/get_status", params={"task_id": task_id}).json()["data"] == "done"
        )
    )

    # the monitor shows each job's ranges, the task's events; the CLI lists them
    page = httpx.get(f"{base}/monitor/job/{survivor['PandaID']}", timeout=60)
    assert page.status_code == 200 and 'id="event-ranges"' in page.text and "finished: 4" in page.text
    as_data = httpx.get(f"{base}/monitor/api/job/{survivor['PandaID']}", timeout=60).json()
    assert as_data["event_range_counts"] == {"finished": 4} and len(as_data["event_ranges"]) == 4
    task_page = httpx.get(f"{base}/monitor/task/{task_id}", timeout=60)
    assert task_page.status_code == 200 and "40 of 40" in task_page.text
    listed = subprocess.run(
        [sys.executable, "-m", "pandawms", "jobs", "ranges", str(survivor["PandaID"]), "--db-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "finished 4" in listed.stdout and f"{task_id}-{survivor['PandaID']}-" in listed.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "pandawms", "jobs", "ranges", str(a_set), "--json", "--db-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    shown = json.loads(as_json.stdout)
    assert shown["counts"] == {"finished": 4}
    assert sorted(r["attemptNr"] for r in shown["ranges"]) == [1, 1, 2, 2]
