"""pbook's remaining calls through panda-client 2.2.0's Client, against the real server process.

Debug mode (and the pilot's side of it: the ``debug`` command and the stdout tail it sends),
job metadata, lost-file recovery, a task's parent, user secrets, the iDDS/workflow refusals,
and the argument errors the real server answers in the envelope rather than with an HTTP error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select

from pandawms.db.schema_user import file_recovery_requests, job_debug_output, user_secrets
from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.clients import client_env, run_client
from tests.e2e.test_prun import CLAIMS, QUEUE, wait_for_status

ACCEPT = {"Accept": "application/json"}

SUBMIT = r"""
import json
from pandaclient import Client
p = {
    "taskName": "user.jdoe.dbg/", "uniqueTaskName": True, "vo": "atlas", "prodSourceLabel": "user",
    "site": "%(queue)s", "nEvents": 1, "nEventsPerJob": 1, "noInput": True,
    "log": {"dataset": "user.jdoe.dbg.log/", "type": "template", "param_type": "log",
            "value": "user.jdoe.dbg.log.$JEDITASKID.${SN}.log.tgz"},
    "jobParameters": [{"type": "constant", "value": "-p \"echo%%20hi\""}],
}
s, (code, message) = Client.insertTaskParams(p)
print("RESULT:" + json.dumps([s, code, message]))
"""

CALLS = r"""
import json
from pandaclient import Client
pid, tid = %(pid)d, %(tid)d
out = {}
out["kill_bad_id"] = Client.killTask("abc")
out["debug_on"] = Client.setDebugMode(pid, True, False)
out["debug_unknown"] = Client.setDebugMode(987654, True, False)
out["parent"] = Client.get_parent_detailed_info(tid)
out["recover"] = Client.send_file_recovery_request(tid, True)
out["recover_unknown"] = Client.send_file_recovery_request(987654)
out["set"] = Client.set_user_secret("MB_PASSWORD", "s3cr3t-value")
out["set2"] = Client.set_user_secret("other", "x")
out["list"] = Client.get_user_secrets()
out["delete"] = Client.set_user_secret("other", None)
out["list2"] = Client.get_user_secrets()
out["workflow"] = Client.call_idds_user_workflow_command("get_status", {"request_id": 5})
out["native"] = Client.get_workflow_details(5)
out["attributes"] = Client.get_cert_attributes()[0]
print("RESULT:" + json.dumps(out))
"""

AFTER = r"""
import json
from pandaclient import Client
pid, tid = %(pid)d, %(tid)d
out = {"metadata": Client.getUserJobMetadata(tid), "debug_final": Client.setDebugMode(pid, False, False)}
out["delete_all"] = Client.set_user_secret(None, None)
out["list"] = Client.get_user_secrets()
print("RESULT:" + json.dumps(out))
"""


def _update(base: str, pid: int, state: str, attempt: int, **extra: str) -> dict:
    """One updateJob as pilot 3.7 sends it (form in, JSON out)."""
    data = {"jobId": pid, "state": state, "attemptNr": attempt, "siteName": QUEUE, "node": "wn1", **extra}
    reply = httpx.post(base + "/server/panda/updateJob", headers=ACCEPT, data=data)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_pbook_calls_through_the_client(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    db = tmp_path / "pbook.sqlite"
    server = start_server(f"sqlite:///{db}", {"PANDA_DAEMON_PERIODS": "task_manager=1"})
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE)})
    env = client_env(server.base, tmp_path, CLAIMS)
    status, code, message = run_client(SUBMIT % {"queue": QUEUE}, env)
    assert (status, code) == (0, 0), message
    tid = int(message.split("jediTaskID=")[1])
    assert wait_for_status(server.base, tid, "running") == "running"
    job = httpx.post(
        server.base + "/server/panda/getJob",
        headers=ACCEPT,
        data={"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "user", "node": "wn1"},
    ).json()
    assert job["StatusCode"] == 0, job
    pid, attempt = job["PandaID"], job["attemptNr"]
    # Unset platform and space tokens are "NULL" on the wire, as the real dispatcher sends them.
    assert job["cmtConfig"] == "NULL", job
    assert set(job["dispatchDBlockTokenForOut"].split(",")) == {"NULL"}, job
    assert _update(server.base, pid, "running", attempt) == {"StatusCode": 0, "command": "NULL"}

    r = run_client(CALLS % {"pid": pid, "tid": tid}, env)
    # An argument error is a refusal in the envelope, which the client shows, not a lost connection.
    assert r["kill_bad_id"][0] == 0 and r["kill_bad_id"][1][0] is False
    assert "task_id" in r["kill_bad_id"][1][1]
    assert r["debug_on"] == [0, "Succeeded"]
    assert r["debug_unknown"] == [255, None]  # setDebugMode is a "basic" call: no reason shown
    assert r["parent"] == [255, None]  # no parent: a refusal, as for the real server
    assert r["recover"][0] == 0 and r["recover"][1][0] is True and r["recover"][1][1]["requestID"] >= 1
    assert r["recover_unknown"] == [0, [False, "jediTaskID=987654 not found"]]
    assert r["set"] == [0, [True, None]] and r["set2"] == [0, [True, None]]
    assert r["list"] == [0, [True, {"MB_PASSWORD": "s3cr3t-value", "other": "x"}]]
    assert r["delete"] == [0, [True, None]]
    assert r["list2"] == [0, [True, {"MB_PASSWORD": "s3cr3t-value"}]]
    assert r["workflow"] == [0, [False, "no iDDS configured: set PANDA_IDDS_URL"]]
    assert r["native"][0] == 0 and r["native"][1][0] is False and "workflow_id=5" in r["native"][1][1]
    assert r["attributes"] == 0

    # The pilot hears "debug" on its next heartbeat and sends its stdout tail, which is kept.
    assert _update(server.base, pid, "running", attempt) == {"StatusCode": 0, "command": "debug"}
    tail = "line 1\nline 2 of the payload\n"
    assert _update(server.base, pid, "running", attempt, stdout=tail)["command"] == "debug"
    report = {"user": "metadata", "n": 3}
    xml = {lfn: {"guid": "", "fsize": 1, "adler32": "00000001"} for lfn in job["outFiles"].split(",") if lfn}
    final = _update(
        server.base,
        pid,
        "finished",
        attempt,
        transExitCode="0",
        pilotErrorCode="0",
        xml=json.dumps(xml),
        metaData=json.dumps(report),
    )
    assert final["StatusCode"] == 0
    assert wait_for_status(server.base, tid, "done") == "done"

    after = run_client(AFTER % {"pid": pid, "tid": tid}, env)
    assert after["metadata"] == [0, {str(pid): report}]
    assert after["debug_final"] == [255, None]  # the job has ended: its debug mode cannot change
    assert after["delete_all"] == [0, [True, None]] and after["list"] == [0, [True, {}]]

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(select(job_debug_output.c.stdOut)).scalars().all() == [tail]
        requests = conn.execute(
            select(file_recovery_requests.c.jediTaskID, file_recovery_requests.c.dryRun)
        ).all()
        assert [tuple(r) for r in requests] == [(tid, 1)]
        stored = conn.execute(select(user_secrets.c.owner, user_secrets.c.data)).all()
    engine.dispose()
    assert [row[0] for row in stored] == ["jane doe"] or [row[0] for row in stored] == ["Jane Doe"]


def test_secrets_are_encrypted_at_rest(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    db = tmp_path / "secrets.sqlite"
    server = start_server(f"sqlite:///{db}")
    env = client_env(server.base, tmp_path, CLAIMS)
    script = (
        "import json\nfrom pandaclient import Client\n"
        "print('RESULT:' + json.dumps([Client.set_user_secret('TOKEN', 'plain-text-that-must-not-show'),"
        " Client.get_user_secrets()]))"
    )
    set_reply, got = run_client(script, env)
    assert set_reply == [0, [True, None]] and got == [0, [True, {"TOKEN": "plain-text-that-must-not-show"}]]
    raw = db.read_bytes()
    assert b"plain-text-that-must-not-show" not in raw and b"TOKEN" not in raw
    key_file = Path(server.log_path).parent / "secrets.key"
    assert key_file.is_file() and (key_file.stat().st_mode & 0o777) == 0o600
    # A value over pbook's 1000 kB limit is refused by the server too, and nothing changes.
    big = httpx.post(
        server.base + "/api/v1/creds/set_user_secrets",
        json={"key": "big", "value": "x" * (1000 * 1024 + 1)},
        headers={"Authorization": f"Bearer {env['PANDA_AUTH_ID_TOKEN']}", "Origin": "atlas"},
    )
    assert big.status_code == 413 and "exceeds the limit" in big.json()["message"]
    # Without any identity there is no owner: refused.
    anonymous = httpx.get(server.base + "/api/v1/creds/get_user_secrets").json()
    assert anonymous["success"] is False and "identified user" in anonymous["message"]


def test_wire_details_of_the_real_server(server: ServerProcess) -> None:
    """Arguments and verbs the real server takes, and its answers to mistakes."""
    base = server.base + "/api/v1"
    # Harvester's and the pilot's status reads send a timeout.
    reply = httpx.get(base + "/job/get_status", params={"job_ids": "1", "timeout": "30"}).json()
    assert reply == {"success": True, "message": "", "data": [{"status": "unknown", "command": "tobekilled"}]}
    reply = httpx.get(base + "/pilot/get_job_status", params={"job_ids": "1", "timeout": "30"}).json()
    assert reply["success"] is True and reply["data"][0]["status"] == "not found"
    # job/get_description* take GET as well as POST.
    for name in ("get_description", "get_description_incl_archive"):
        reply = httpx.get(f"{base}/job/{name}", params={"job_ids": "1"})
        assert reply.status_code == 200 and reply.json() == {"success": True, "message": "", "data": [None]}
    # system/get_attributes echoes what it is given.
    reply = httpx.get(base + "/system/get_attributes", params={"a": "1", "b": "two"}).json()
    assert reply["success"] is True and reply["data"]["parameters"] == {"a": "1", "b": "two"}
    # Mistakes are HTTP 200 with success false and the reason; nothing is done.
    wrong_verb = httpx.get(base + "/job/kill", params={"job_ids": "1"})
    assert wrong_verb.status_code == 200
    assert wrong_verb.json() == {"success": False, "message": "expecting POST, received GET", "data": None}
    wrong_type = httpx.post(base + "/task/kill", json={"task_id": "abc"})
    assert wrong_type.status_code == 200 and wrong_type.json()["success"] is False
    assert "task_id must be an integer" in wrong_type.json()["message"]
    missing = httpx.post(base + "/task/kill", json={})
    assert missing.status_code == 200 and "missing required argument task_id" in missing.json()["message"]
    unknown = httpx.post(base + "/task/kill", json={"task_id": 1, "nonsense": 2})
    assert unknown.status_code == 200 and "unexpected argument" in unknown.json()["message"]
    # An unreadable body and an unknown method keep their HTTP statuses.
    bad_json = httpx.post(base + "/task/kill", content=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["success"] is False
    assert httpx.get(base + "/no/such").status_code == 404
    # The workflow commands of pbook go to the legacy relay: a refusal panda-client decodes.
    relay = httpx.post(
        server.base + "/server/panda/execute_idds_workflow_command",
        data={"command_name": "get_status", "kwargs": json.dumps({"request_id": 1})},
    )
    assert relay.status_code == 200 and relay.json() == [False, "no iDDS configured: set PANDA_IDDS_URL"]


PBOOK_FIRST = """
print('@@debug'); debug({pid}, True)
print('@@set'); set_secret('MB_PASSWORD', 'pw-value')
print('@@list'); list_secrets()
print('@@delete'); delete_secret('MB_PASSWORD')
print('@@delete_all'); delete_all_secrets()
print('@@recover'); recover_lost_files({tid}, test_mode=True)
print('@@show_workflow'); show_workflow(1)
print('@@kill_workflow'); kill_workflow(1)
print('@@retry_workflow'); retry_workflow(1)
print('@@finish_workflow'); finish_workflow(1)
print('@@pause_workflow'); pause_workflow(1)
print('@@resume_workflow'); resume_workflow(1)
print('@@show_native_workflow'); show_native_workflow(1)
print('@@reload_input'); reload_input('{tid}')
print('@@kill'); kill('{tid2}')
print('@@end')
"""

PBOOK_AFTER = """
print('@@metadata'); get_user_job_metadata({tid}, '{meta}')
print('@@retry_killed'); retry('{tid2}')
print('@@finish'); finish('{tid}')
print('@@show'); show({tid})
print('@@showl'); showl('{tid}')
print('@@help'); help()
print('@@end')
"""


def _sections(output: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    name = ""
    for line in output.splitlines():
        if line.startswith("@@"):
            name = line[2:].strip()
            parts[name] = ""
        elif name:
            parts[name] += line + "\n"
    return parts


def test_pbook_commands(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Each pbook subcommand that talks to the server, as a user types it (pbook -c)."""
    from tests.e2e.test_prun import run_cli

    server = start_server(f"sqlite:///{tmp_path / 'cli.sqlite'}", {"PANDA_DAEMON_PERIODS": "task_manager=1"})
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE)})
    env = client_env(server.base, tmp_path / "client", CLAIMS)

    def submit(name: str) -> int:
        status, code, message = run_client(SUBMIT.replace("user.jdoe.dbg", name) % {"queue": QUEUE}, env)
        assert (status, code) == (0, 0), message
        return int(message.split("jediTaskID=")[1])

    # The first task's job is taken before the second task exists, so it is the first task's.
    tid = submit("user.jdoe.cli1")
    assert wait_for_status(server.base, tid, "running") == "running"
    job = httpx.post(
        server.base + "/server/panda/getJob",
        headers=ACCEPT,
        data={"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "user", "node": "wn1"},
    ).json()
    assert job["StatusCode"] == 0 and job["taskID"] == tid, job
    pid, attempt = job["PandaID"], job["attemptNr"]
    tid2 = submit("user.jdoe.cli2")
    _update(server.base, pid, "running", attempt)
    home = tmp_path / "home"
    workdir = tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    out = run_cli(
        f'pbook -c "{PBOOK_FIRST.format(pid=pid, tid=tid, tid2=tid2)}"',
        server,
        home,
        workdir,
    )
    parts = _sections(out)
    assert "end" in parts, out
    assert "Succeeded" in parts["debug"], out
    assert "Secret set successfully" in parts["set"], out
    assert "MB_PASSWORD" in parts["list"] and "pw-value" in parts["list"], out
    for name in ("delete", "delete_all"):
        assert "Secret set successfully" in parts[name], out
    assert "requestID" in parts["recover"], out
    for name in (
        "show_workflow",
        "kill_workflow",
        "retry_workflow",
        "finish_workflow",
        "pause_workflow",
        "resume_workflow",
    ):
        assert "no iDDS configured: set PANDA_IDDS_URL" in parts[name], (name, out)
    assert "pandawms runs no native workflows" in parts["show_native_workflow"], out
    assert "ERROR" not in parts["reload_input"] and "ERROR" not in parts["kill"], out
    killed, kept = tid2, tid
    # The pilot hears "debug" and finishes the job with a job report; the killed task ends aborted.
    assert _update(server.base, pid, "running", attempt)["command"] == "debug"
    xml = {lfn: {"guid": "", "fsize": 1, "adler32": "00000001"} for lfn in job["outFiles"].split(",") if lfn}
    _update(
        server.base,
        pid,
        "finished",
        attempt,
        transExitCode="0",
        pilotErrorCode="0",
        xml=json.dumps(xml),
        metaData='{"k": 1}',
    )
    assert wait_for_status(server.base, kept, "done") == "done"
    assert wait_for_status(server.base, killed, "aborted") == "aborted"
    meta = tmp_path / "meta.json"
    out = run_cli(f'pbook -c "{PBOOK_AFTER.format(tid=kept, tid2=killed, meta=meta)}"', server, home, workdir)
    parts = _sections(out)
    assert "end" in parts, out
    assert json.loads(meta.read_text()) == {str(pid): {"k": 1}}
    assert "ERROR" not in parts["retry_killed"], out
    assert wait_for_status(server.base, killed, "running") in ("ready", "running")
    # A refused command shows the server's reason through pbook.
    assert f"command=finish cannot be executed for jediTaskID={kept} in done status" in parts["finish"], out
    assert str(kept) in parts["show"] and str(kept) in parts["showl"], out
    assert "generate_credential" in parts["help"], out


def test_pilot_legacy_debug_mode_and_secrets(server: ServerProcess) -> None:
    """Pilot 3.11's setDebugMode (its queue asks for debug mode) and get_user_secrets calls."""
    from tests.jobs import make_job, state_list

    submitted = httpx.post(
        server.base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(make_job())])}
    ).json()
    panda_id = submitted["data"][0][0]
    reply = httpx.post(
        server.base + "/server/panda/setDebugMode", data={"pandaID": panda_id, "modeOn": "True"}
    )
    assert reply.status_code == 200 and reply.text == "Succeeded"
    described = httpx.post(server.base + "/api/v1/job/get_description", json={"job_ids": [panda_id]}).json()
    assert "debug" in described["data"][0]["specialHandling"].split(",")
    unknown = httpx.post(
        server.base + "/server/panda/setDebugMode", data={"pandaID": 987654, "modeOn": "True"}
    )
    assert unknown.text == "PandaID=987654 not found in active DB"
    # Secrets belong to an identity: a caller without one gets the reason, not someone's secrets.
    secrets = httpx.post(
        server.base + "/server/panda/get_user_secrets",
        data={"get_json": "True", "keys": "MB_USERNAME,MB_PASSWORD"},
    )
    assert secrets.status_code == 200
    assert secrets.json() == [False, "secrets need an identified user (a certificate or a token)"]
