"""JSON nested far deeper than any client sends, in every place a request carries JSON.

Python's own decoder gives up on deep nesting with a RecursionError, which would surface as a
500; every one of these must be a plain 4xx with a message instead, and change nothing.
"""

from __future__ import annotations

import base64

import httpx

from tests.conftest import ServerProcess

DEEP = "[" * 5000 + "]" * 5000


def test_deeply_nested_json_is_refused_everywhere(sqlite_server: ServerProcess) -> None:
    base = sqlite_server.base
    # A v1 parameter that is itself JSON text, and a v1 JSON body.
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": DEEP})
    # An argument error is answered in the envelope (HTTP 200, success false), as the real server does.
    assert reply.status_code == 200 and reply.json()["success"] is False and "jobs" in reply.json()["message"]
    reply = httpx.post(
        base + "/api/v1/job/submit",
        content=b'{"jobs":' + DEEP.encode() + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 400 and "JSON" in reply.json()["message"]
    # Legacy form fields that hold JSON.
    accept = {"Accept": "application/json"}
    for method, field in (("updateJobsInBulk", "jobList"), ("updateEventRanges", "eventRanges")):
        reply = httpx.post(f"{base}/server/panda/{method}", data={field: DEEP}, headers=accept)
        assert reply.status_code < 500, (method, reply.status_code, reply.text)
        assert reply.json()["StatusCode"] != 0, reply.text
    # A bearer token whose payload is deep JSON: refused as a token, not a crash.
    payload = base64.urlsafe_b64encode(DEEP.encode()).decode().rstrip("=")
    token = f"e30.{payload}.sig"
    reply = httpx.get(base + "/api/v1/system/get_attributes", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code < 500, reply.text
    # Nothing was stored.
    status = httpx.get(base + "/api/v1/job/get_status", params={"job_ids": "1"}).json()
    assert status["data"] == [{"status": "unknown", "command": "tobekilled"}]


def test_integers_past_64_bits_are_refused(sqlite_server: ServerProcess) -> None:
    huge = str(2**64)
    reply = httpx.get(sqlite_server.base + "/api/v1/pilot/get_job_status", params={"job_ids": huge})
    body = reply.json()
    assert reply.status_code == 200 and body["success"] is False, reply.text
    assert "at most 64 bits" in body["message"] and body["data"] is None, reply.text
    reply = httpx.post(sqlite_server.base + "/api/v1/task/get_status", json={"task_id": 2**70})
    body = reply.json()
    assert reply.status_code == 200 and body["success"] is False and "task_id" in body["message"], reply.text
