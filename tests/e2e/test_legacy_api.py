"""The legacy pilot API as pilots 3.7 (form) and 3.11 (gzip JSON) speak it."""

from __future__ import annotations

import gzip
import json
import urllib.parse

import httpx

from tests.conftest import ServerProcess
from tests.jobs import make_file, make_job, state_list

JSON = {"Accept": "application/json"}


def _submit(base: str, *jobs: dict) -> list[int]:
    reply = httpx.post(
        base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
    ).json()
    assert reply["success"], reply
    return [a[0] for a in reply["data"]]


def _form(reply: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(reply.text, keep_blank_values=True).items()}


def test_is_alive(sqlite_server: ServerProcess) -> None:
    assert httpx.get(sqlite_server.base + "/server/panda/isAlive").text == "alive=yes"


def test_getjob_form_request_reply_negotiated(server: ServerProcess) -> None:
    files = [
        make_file("in1.root", "input", GUID="g1", fsize=10, checksum="ad:11", scope="data", dataset="ds.in"),
        make_file("in2.root", "input", GUID="g2", fsize=20, md5sum="abc", scope="data", dataset="ds.in"),
        make_file("out.root", "output", scope="user.x", destinationDBlockToken="dst:LOCAL_DISK"),
        make_file("job.log.tgz", "log", scope="user.x", GUID="lg", destinationDBlockToken="dst:LOCAL_DISK"),
    ]
    (pid,) = _submit(server.base, make_job(files=files, maxWalltime=3600, coreCount=None))
    empty = httpx.post(server.base + "/server/panda/getJob", data={"siteName": "NOWHERE"})
    assert _form(empty) == {"StatusCode": "20", "errorDialog": "no jobs in PanDA"}
    reply = httpx.post(
        server.base + "/server/panda/getJob",
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "node": "wn1", "mem": "4000"},
    )
    job = _form(reply)
    assert job["StatusCode"] == "0" and job["PandaID"] == str(pid)
    assert job["inFiles"] == "in1.root,in2.root" and job["GUID"] == "g1,g2" and job["fsize"] == "10,20"
    assert job["checksum"] == "ad:11,abc" and job["scopeIn"] == "data,data"
    assert job["outFiles"] == "out.root,job.log.tgz" and job["scopeOut"] == "user.x"
    assert job["logFile"] == "job.log.tgz" and job["logGUID"] == "lg"
    assert job["ddmEndPointOut"] == "LOCAL_DISK,LOCAL_DISK"
    assert job["jobPars"] == "echo hello" and job["maxWalltime"] == "3600" and job["coreCount"] == "1"
    assert job["swRelease"] == "NULL" and job["taskID"] == "NULL"


def test_getjob_gzip_json_and_bulk(server: ServerProcess) -> None:
    ids = _submit(server.base, make_job(), make_job(), make_job())
    body = gzip.compress(
        json.dumps({"siteName": "TEST_SITE", "prodSourceLabel": "user", "node": "wn"}).encode()
    )
    single = httpx.post(
        server.base + "/server/panda/getJob", content=body, headers={"Content-Type": "application/json"}
    )
    assert _form(single)["PandaID"] == str(ids[0])
    bulk = httpx.post(
        server.base + "/server/panda/getJob",
        headers=JSON,
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "nJobs": "5"},
    ).json()
    assert bulk["StatusCode"] == 0 and [j["PandaID"] for j in bulk["jobs"]] == ids[1:]
    assert all(j["StatusCode"] == 0 for j in bulk["jobs"])


def test_updatejob_lifecycle_kill_and_status(server: ServerProcess) -> None:
    ids = _submit(server.base, make_job(), make_job())
    for _ in ids:
        httpx.post(
            server.base + "/server/panda/getJob", data={"siteName": "TEST_SITE", "prodSourceLabel": "user"}
        )
    upd = server.base + "/server/panda/updateJob"
    first, second = ids
    assert httpx.post(
        upd, headers=JSON, data={"jobId": first, "state": "starting", "attemptNr": "0"}
    ).json() == {"StatusCode": 0, "command": "NULL"}
    assert _form(
        httpx.post(
            upd,
            data={
                "jobId": first,
                "state": "running",
                "attemptNr": "0",
                "cpuConsumptionTime": "12",
                "maxRSS": "1000",
                "startTime": "1795549595.1",
            },
        )
    ) == {"StatusCode": "0", "command": "NULL"}
    gz = gzip.compress(
        json.dumps(
            {
                "jobId": first,
                "state": "finished",
                "attemptNr": 0,
                "transExitCode": 0,
                "pilotErrorCode": 0,
                "pilotTiming": "1|2|3|4|5",
            }
        ).encode()
    )
    assert (
        _form(httpx.post(upd, content=gz, headers={"Content-Type": "application/json"}))["command"] == "NULL"
    )
    httpx.post(upd, data={"jobId": second, "state": "running", "attemptNr": "0"})
    assert httpx.post(server.base + "/api/v1/job/kill", json={"job_ids": [second]}).json()["data"] == [True]
    assert (
        httpx.post(upd, headers=JSON, data={"jobId": second, "state": "running"}).json()["command"]
        == "tobekilled"
    )
    httpx.post(upd, data={"jobId": second, "state": "failed", "attemptNr": "0", "pilotErrorCode": "1144"})
    status = _form(
        httpx.post(server.base + "/server/panda/getStatus", data={"ids": f"{first} {second} 999999"})
    )
    assert status == {"StatusCode": "0", "status": "finished cancelled notfound", "attemptNr": "0 0 0"}
    described = httpx.post(server.base + "/api/v1/job/get_description", json={"job_ids": [first]}).json()[
        "data"
    ][0]
    assert described["cpuConsumptionTime"] == 12 and described["maxRSS"] == 1000
    assert described["pilotTiming"] == "1|2|3|4|5" and described["transExitCode"] == "0"


def test_bulk_updates_and_event_ranges(sqlite_server: ServerProcess) -> None:
    base = sqlite_server.base
    ids = _submit(base, make_job(), make_job())
    httpx.post(
        base + "/server/panda/getJob", data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "nJobs": 2}
    )
    updates = [{"jobId": ids[0], "state": "running"}, {"jobId": ids[1], "state": "bogus"}, {"jobId": "x"}]
    reply = httpx.post(base + "/server/panda/updateJobsInBulk", data={"jobList": json.dumps(updates)}).json()
    assert reply[0] is True
    assert reply[1][0] == {"StatusCode": 0, "command": "NULL"}
    assert reply[1][2]["StatusCode"] == 50
    ranges = httpx.post(base + "/server/panda/getEventRanges", headers=JSON, data={"pandaID": ids[0]}).json()
    assert ranges["StatusCode"] == 0 and ranges["eventRanges"] == []
    check = httpx.post(base + "/server/panda/checkJobStatus", data={"ids": f"{ids[0]},42"}).json()
    assert check == [{"status": "running", "command": "NULL"}, {"status": "unknown", "command": "tobekilled"}]
