"""The v1 methods of the cache, checkpoints, user requests, target slots, async requests and
the caller's attributes, on a strict server over HTTPS with certificates.

panda-client 2.2.0 has no functions for these methods (Harvester's HPO checkpoint calls are
driven by its own communicator in ``test_harvester_real.py``), so they are sent as its newer
HttpClientV1 and the real server's operator tools send them: JSON POST bodies, multipart
uploads, GET query strings. Each method is tried by someone without the right, who is refused.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.certs import Pki, make_pki
from tests.e2e.httpd_proc import Httpd

BOSS = "Prod Boss"
ALICE = "Alice Admin"
BOB = "Bob Jones"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    httpd = Httpd(
        tmp_path,
        pki,
        workers=1,
        auth_mode="strict",
        production_dns=f"/DC=org/DC=pandawms/OU=Users/CN={BOSS}",
        async_request_users=f"{ALICE},Somebody Else",
        cache_dir=str(tmp_path / "cache"),
        cache_host="cache.example.org",
    )
    yield httpd
    httpd.stop()


class Caller:
    """One certificate's HTTPS client, sending as panda-client's HttpClientV1 does."""

    def __init__(self, server: Httpd, pki: Pki, cert: Path) -> None:
        context = ssl.create_default_context(capath=str(pki.ca_dir))
        context.load_cert_chain(str(cert))
        self.http = httpx.Client(base_url=server.https + "/api/v1/", verify=context, timeout=60)

    def post(self, path: str, **body: Any) -> tuple[int, dict[str, Any]]:
        reply = self.http.post(path, json=body, headers={"Accept": "application/json"})
        return reply.status_code, reply.json()

    def get(self, path: str, **query: Any) -> tuple[int, dict[str, Any]]:
        reply = self.http.get(path, params=query, headers={"Accept": "application/json"})
        return reply.status_code, reply.json()

    def upload(self, path: str, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        reply = self.http.post(path, files={"file": (name, data)}, headers={"Accept": "application/json"})
        return reply.status_code, reply.json()


@pytest.fixture
def callers(server: Httpd, pki: Pki) -> Iterator[dict[str, Caller]]:
    made = {name: Caller(server, pki, pki.add_user(name)) for name in (BOSS, ALICE, BOB)}
    yield made
    for caller in made.values():
        caller.http.close()


def _db(server: Httpd) -> sqlite3.Connection:
    return sqlite3.connect(server.env["PANDA_DB_URL"].removeprefix("sqlite:///"))


def _audited(server: Httpd, method: str) -> list[tuple[str, str]]:
    with _db(server) as conn:
        return conn.execute(
            "SELECT outcome, identity FROM audit_log WHERE method=? ORDER BY id", (method,)
        ).fetchall()


def test_the_caller_as_the_server_sees_it(server: Httpd, callers: dict[str, Caller]) -> None:
    code, voms = callers[BOB].get("system/get_voms_attributes")
    dn = "/DC=org/DC=pandawms/OU=Users/CN=Bob Jones"
    assert code == 200 and voms == {
        "success": True,
        "message": f"GRST_CRED_0 : X509USER 0 0 0 {dn}",
        "data": {"GRST_CRED_0": f"X509USER 0 0 0 {dn}"},
    }
    code, attrs = callers[BOSS].get("system/get_user_attributes")
    assert code == 200 and attrs["success"]
    assert attrs["data"] == {
        "user_dn_raw": "/DC=org/DC=pandawms/OU=Users/CN=Prod Boss",
        "user_dn_clean": "Prod Boss",
        "fqans": [],
        "is_production_user": True,
        "production_working_groups": [],
        "primary_working_group": None,
    }
    assert (
        "User DN (clean): Prod Boss\n" in attrs["message"] and "Production user: True\n" in attrs["message"]
    )
    for method in ("get_voms_attributes", "get_user_attributes"):
        plain = httpx.get(f"{server.base}/api/v1/system/{method}", headers={"Accept": "application/json"})
        assert plain.status_code == 401 and "needs a secure identity" in plain.json()["message"]


def test_cache_files_touch_give_up_and_register(server: Httpd, callers: dict[str, Caller]) -> None:
    boss, alice, bob = callers[BOSS], callers[ALICE], callers[BOB]
    sandbox = gzip.compress(b"user code" * 100)
    code, stored = bob.upload("file_server/upload_cache_file", "sources.bob.tar.gz", sandbox)
    assert code == 200 and stored["success"], stored
    with _db(server) as conn:
        conn.execute("UPDATE cache_files SET modificationTime='2020-01-01 00:00:00'")
    assert alice.post("file_server/touch_cache_file", file_name="sources.bob.tar.gz") == (
        200,
        {"success": True, "message": "", "data": None},
    )
    with _db(server) as conn:
        (when,) = conn.execute("SELECT modificationTime FROM cache_files").fetchone()
    assert when > "2026"
    code, reply = alice.post("file_server/touch_cache_file", file_name="nothing.tar.gz")
    assert code == 200 and not reply["success"], reply  # v1: refusals after the handler ran
    code, reply = alice.post("file_server/touch_cache_file", file_name="../../etc/passwd")
    assert code == 200 and not reply["success"]  # only the last part names a cached file
    code, reply = alice.post("file_server/touch_cache_file", file_name="..")
    assert code == 200 and "is not allowed" in reply["message"]

    # Giving a file up: only its owner (or production); the cleaner then takes it.
    code, reply = alice.post("file_server/delete_cache_file", file_name="sources.bob.tar.gz")
    assert code == 403 and "belongs to another user" in reply["message"]
    assert bob.post("file_server/delete_cache_file", file_name="sources.bob.tar.gz")[1]["success"]
    assert bob.post("file_server/delete_cache_file", file_name="never-there.tgz")[1]["success"]
    with _db(server) as conn:
        assert conn.execute("SELECT modificationTime FROM cache_files").fetchone()[0].startswith("2000-01-01")

    # A cache server registers a sandbox it holds; Bob's reuse check then finds it there.
    code, reply = bob.post(
        "file_server/register_cache_file", user_name=BOB, file_name="remote.tgz", file_size=10, checksum="77"
    )
    assert code == 403 and "role production required" in reply["message"]
    args = {"user_name": BOB, "file_name": "remote.tgz", "file_size": 10, "checksum": "77"}
    assert boss.post("file_server/register_cache_file", **args) == (
        200,
        {"success": True, "message": "", "data": None},
    )
    assert boss.post("file_server/register_cache_file", **args)[1] == {
        "success": False,
        "message": "WARNING: file exist",
        "data": None,
    }
    code, found = bob.post("file_server/validate_cache_file", file_size=10, checksum="77")
    assert found == {"success": True, "message": "FOUND:127.0.0.1:remote.tgz", "data": None}
    assert alice.post("file_server/validate_cache_file", file_size=10, checksum="77")[1]["success"] is False
    assert [o for o, _ in _audited(server, "file_server/register_cache_file")] == ["refused", "ok", "refused"]


def test_hpo_checkpoints_belong_to_production_or_the_task_owner(
    server: Httpd, callers: dict[str, Caller]
) -> None:
    boss, bob = callers[BOSS], callers[BOB]
    code, reply = boss.upload("file_server/upload_hpo_checkpoint", "123_7", b"point-7")
    cache = Path(server.env["PANDA_CACHE_DIR"])
    assert code == 200 and reply["data"] == str(cache / "hpo_cp_123_7"), reply
    assert reply["message"] == f"Successfully placed at {cache / 'hpo_cp_123_7'}"
    assert boss.upload("file_server/upload_hpo_checkpoint", "123_7", b"point-7b")[0] == 200  # replaced
    served = boss.http.get(server.https + "/cache/hpo_cp_123_7")
    assert served.status_code == 200 and served.content == b"point-7b"
    code, reply = bob.upload("file_server/upload_hpo_checkpoint", "123_7", b"mine now")
    assert code == 403 and "not the owner of task 123" in reply["message"]
    code, reply = bob.post("file_server/delete_hpo_checkpoint", task_id="123", sub_id="7")
    assert code == 403
    for bad in ("123", "1_2_3"):
        code, reply = boss.upload("file_server/upload_hpo_checkpoint", bad, b"x")
        assert code == 200 and reply["message"] == "Failed to extract task and sub IDs"
    code, reply = boss.post("file_server/delete_hpo_checkpoint", task_id="123", sub_id="..")
    assert code == 200 and "is not allowed" in reply["message"]
    assert boss.post("file_server/delete_hpo_checkpoint", task_id="123", sub_id="7")[1]["success"]
    code, reply = boss.post("file_server/delete_hpo_checkpoint", task_id="123", sub_id="7")
    assert code == 200 and not reply["success"] and "no checkpoint hpo_cp_123_7" in reply["message"]
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(("hpo", ".hpo"))) == []


def test_workflow_and_event_picking_requests_wait_for_their_services(
    server: Httpd, callers: dict[str, Caller]
) -> None:
    bob = callers[BOB]
    workflow = {"name": "wf", "steps": [{"name": "a"}]}
    assert bob.post("file_server/upload_workflow_request", data=json.dumps(workflow)) == (
        200,
        {
            "success": True,
            "message": "The request was accepted and will be processed in a few minutes",
            "data": None,
        },
    )
    code, reply = bob.post("file_server/upload_workflow_request", data=json.dumps(workflow), sync=True)
    assert code == 200 and not reply["success"] and "PANDA_IDDS_URL" in reply["message"]
    code, reply = bob.post("file_server/upload_workflow_request", data="{not json")
    assert code == 200 and "data is not JSON" in reply["message"]
    code, reply = bob.post(
        "file_server/upload_event_picking_request",
        run_event_list="358031 1001 guid-a\n358031 1002 guid-b\njunk\n358031 1003\n",
        data_type="AOD",
        stream_name="physics_Main",
        user_dataset_name="user.bob.picked",
        include_guids=True,
    )
    assert (code, reply) == (200, {"success": True, "message": "", "data": None})
    code, reply = bob.post("file_server/upload_event_picking_request", run_event_list="1 2\n" * 3_000_000)
    assert code == 413 and "Run/event list is too large" in reply["message"]
    with _db(server) as conn:
        rows = conn.execute(
            "SELECT kind, userName, status, payload FROM user_requests ORDER BY requestID"
        ).fetchall()
    assert [(k, u, s) for k, u, s, _ in rows] == [
        ("workflow", BOB, "pending"),
        ("event_picking", BOB, "pending"),
    ]
    stored_workflow, picking = (json.loads(r[3]) for r in rows)
    assert stored_workflow["data"] == workflow and stored_workflow["userName"].endswith("/CN=Bob Jones")
    assert picking["runEvent"] == [["358031", "1001"], ["358031", "1002"]]
    assert picking["runEvtGuidMap"] == {"358031,1001": ["guid-a"], "358031,1002": ["guid-b"]}
    assert picking["eventPickDataType"] == "AOD" and picking["userDatasetName"] == "user.bob.picked"
    plain = httpx.post(
        f"{server.base}/api/v1/file_server/upload_workflow_request",
        json={"data": "{}"},
        headers={"Accept": "application/json"},
    )
    assert plain.status_code == 401


def test_idds_enum_decoding_needs_idds(server: Httpd, callers: dict[str, Caller]) -> None:
    bob = callers[BOB]
    assert bob.post("idds/decode_idds_enum", d={"status": 1}) == (
        200,
        {"success": True, "message": "", "data": {"status": 1}},
    )
    code, reply = bob.post("idds/decode_idds_enum", d={"__idds_const__": "WorkStatus.Finished"})
    assert (code, reply["success"], reply["message"]) == (
        200,
        False,
        "no iDDS configured: set PANDA_IDDS_URL",
    )


def test_target_slots_are_for_production(server: Httpd, callers: dict[str, Caller]) -> None:
    code, reply = callers[BOB].post("harvester/add_target_slots", panda_queue="CERN", slots=10000)
    assert code == 403 and "role production required" in reply["message"]
    code, reply = callers[BOSS].post(
        "harvester/add_target_slots",
        panda_queue="CERN",
        slots=10000,
        global_share="User Analysis",
        expiration_date="2",
    )
    assert (code, reply) == (
        200,
        {
            "success": True,
            "message": "set numSlots=10000 for PQ=CERN gshare=User Analysis resource=None",
            "data": None,
        },
    )
    with _db(server) as conn:
        assert conn.execute(
            "SELECT pandaQueueName, gshare, resourceType, numSlots FROM harvester_slots"
        ).fetchall() == [("CERN", "User Analysis", "", 10000)]
    assert [o for o, _ in _audited(server, "harvester/add_target_slots")] == ["refused", "ok"]
    spec = Path(server.env["PANDA_CACHE_DIR"]).parent / "queues.json"
    spec.write_text(json.dumps({"CERN": {"status": "online", "type": "unified", "corecount": 8}}))
    subprocess.run(
        [sys.executable, "-m", "pandawms", "queues", "load", str(spec)],
        env=server.env,
        check=True,
        timeout=60,
    )
    shown = callers[BOB].http.get(server.https + "/monitor/api/queue/CERN").json()
    assert shown["target_slots"] == [{"gshare": "User Analysis", "resourceType": None, "numSlots": 10000}]
    page = callers[BOB].http.get(server.https + "/monitor/queue/CERN").text
    assert "10000 (User Analysis, any type)" in page
    listed = subprocess.run(
        [sys.executable, "-m", "pandawms", "slots", "list"],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CERN" in listed and "User Analysis" in listed and "10000" in listed


def _daemon_once(server: Httpd) -> None:
    subprocess.run(
        [sys.executable, "-m", "pandawms", "daemon", "--once", "async_requests"],
        env=server.env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_async_grep_and_probe(server: Httpd, callers: dict[str, Caller]) -> None:
    boss, alice, bob = callers[BOSS], callers[ALICE], callers[BOB]
    grep = {"pattern": "READY|worker", "log_filename": "panda-httpd.log", "service_name": "server"}
    code, reply = bob.post("async_process/submit_grep_request", **grep)
    assert code == 403 and "'Bob Jones' is not authorized" in reply["message"]
    assert alice.post("async_process/submit_grep_request", **grep)[1] == {
        "success": False,
        "message": "no alive machines found for service 'server'",
        "data": None,
    }
    for bad, message in (
        ({**grep, "log_filename": "../secrets.log"}, "must not contain path separators"),
        ({**grep, "log_filename": "other.log"}, "must start with 'panda-'"),
        ({**grep, "machine_name": "node-x"}, "exactly one of service_name or machine_name"),
    ):
        assert message in alice.post("async_process/submit_grep_request", **bad)[1]["message"]
    _daemon_once(server)  # the machine's daemon says it is alive
    code, reply = alice.post("async_process/submit_grep_request", **grep)
    assert code == 200 and reply["success"], reply
    request_id = reply["data"]["request_id"]
    assert (
        alice.get("async_process/get_result", request_id=request_id)[1]["data"]["overall_status"] == "pending"
    )
    _daemon_once(server)
    code, result = alice.get("async_process/get_result", request_id=request_id)
    assert code == 200 and result["data"]["overall_status"] == "complete", result
    (row,) = result["data"]["results"]
    assert row["status"] == "done" and row["return_code"] == 0 and row["result"]
    code, reply = bob.get("async_process/get_result", request_id=request_id)
    assert code == 403 and "not authorized to read results" in reply["message"]
    code, reply = alice.get("async_process/get_result", request_id="nope")
    assert (code, reply["success"], reply["message"]) == (200, False, "request_id 'nope' not found")

    probe = {"service_name": "server", "message": "ping", "seconds": 0}
    code, reply = alice.post("async_process/submit_sleep_echo_request", **probe)
    assert code == 403 and "role production required" in reply["message"]
    code, reply = boss.post("async_process/submit_sleep_echo_request", **{**probe, "seconds": 61})
    assert "must be between 0 and 60" in reply["message"]
    code, reply = boss.post("async_process/submit_sleep_echo_request", **probe)
    assert code == 200 and reply["success"], reply
    _daemon_once(server)
    code, result = boss.get("async_process/get_result", request_id=reply["data"]["request_id"])
    assert result["data"]["overall_status"] == "complete"
    assert [(r["machine_name"], r["result"]) for r in result["data"]["results"]] == [("any", "ping\n")]
    audited = _audited(server, "async_process/submit_grep_request")
    assert [o for o, _ in audited] == ["refused"] * 5 + ["ok"]
    assert audited[0][1].endswith("CN=Bob Jones") and audited[-1][1].endswith("CN=Alice Admin")


NEW_METHODS = [
    ("GET", "system/get_voms_attributes", {}),
    ("GET", "system/get_user_attributes", {}),
    ("POST", "file_server/touch_cache_file", {"file_name": "a.tgz"}),
    ("POST", "file_server/delete_cache_file", {"file_name": "a.tgz"}),
    (
        "POST",
        "file_server/register_cache_file",
        {"user_name": "x", "file_name": "a", "file_size": 1, "checksum": "1"},
    ),
    ("POST", "file_server/delete_hpo_checkpoint", {"task_id": "1", "sub_id": "1"}),
    ("POST", "file_server/upload_workflow_request", {"data": "{}"}),
    ("POST", "file_server/upload_event_picking_request", {"run_event_list": "1 2"}),
    ("POST", "harvester/add_target_slots", {"panda_queue": "Q", "slots": 1}),
    ("POST", "async_process/submit_grep_request", {"pattern": "x", "log_filename": "panda-a.log"}),
    ("POST", "async_process/submit_sleep_echo_request", {"service_name": "server", "message": "m"}),
    ("GET", "async_process/get_result", {"request_id": "r"}),
    ("POST", "idds/decode_idds_enum", {"d": {"a": 1}}),
]


def test_an_anonymous_caller_is_refused_everything(server: Httpd) -> None:
    headers = {"Accept": "application/json"}
    for verb, path, args in NEW_METHODS:
        url = f"{server.base}/api/v1/{path}"
        if verb == "GET":
            reply = httpx.get(url, params=args, headers=headers)
        else:
            reply = httpx.post(url, json=args, headers=headers)
        assert reply.status_code == 401 and "needs a secure identity" in reply.json()["message"], path
    upload = httpx.post(
        f"{server.base}/api/v1/file_server/upload_hpo_checkpoint",
        files={"file": ("1_1", b"x")},
        headers=headers,
    )
    assert upload.status_code == 401
