"""Every task call of panda-client 2.2.0's Client, as pbook and prun make them, against the server.

The wire (method names, parameter names, reply shapes) is checked by the real client parsing
the real replies: a call that does not fit would come back as status 255 or a parse error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.clients import client_env, run_client
from tests.e2e.test_prun import CLAIMS, QUEUE, drive_like_pilot, wait_for_status

SCRIPT = r"""
import json, datetime
from pandaclient import Client

QUEUE = "%(queue)s"

def params(name, **extra):
    p = {
        "taskName": name, "uniqueTaskName": True, "vo": "atlas", "prodSourceLabel": "user",
        "site": QUEUE, "nEvents": 2, "nEventsPerJob": 1, "noInput": True,
        "log": {"dataset": name.rstrip("/") + ".log/", "type": "template", "param_type": "log",
                "value": name.rstrip("/") + ".log.$JEDITASKID.${SN}.log.tgz"},
        "jobParameters": [{"type": "constant", "value": "-p \"echo%%20hi\""}],
    }
    p.update(extra)
    return p

def task_id(reply):
    return int(reply[1][1].split("jediTaskID=")[1])

out = {}
out["bad"] = Client.insertTaskParams(params("user.jdoe.bad/", nEventsPerJob=-1))
a = Client.insertTaskParams(params("user.jdoe.a/"))
out["submit"] = a
tid = task_id(a)
out["dup"] = Client.insertTaskParams(params("user.jdoe.a/"))
out["status"] = Client.getTaskStatus(tid)
out["params"] = Client.getTaskParamsMap(tid)[1]["taskName"]
out["ids"] = Client.getPandaIDsWithTaskID(tid)
s, d = Client.getJediTaskDetails({"jediTaskID": tid}, True, True)
out["details"] = [s, d["status"], d["outDS"], len(d["PandaID"]), d["nFiles"]]
since = (datetime.datetime.utcnow() - datetime.timedelta(hours=1)).strftime("%%Y-%%m-%%d %%H:%%M:%%S")
s, m = Client.getJobIDsJediTasksInTimeRange(since)
out["modified"] = [s, sorted(m), m[str(tid)]["status"], len(m[str(tid)]["PandaID"])]
s, info = Client.get_tasks_detailed_info_since(since=since, filters={"jediTaskID": str(tid)})
out["detailed"] = [s, [(t["jediTaskID"], t["status"], t["superStatus"], t["nFiles"]) for t in info]]
s, (ok, one) = Client.get_task_details_json(tid)
out["detailed_info"] = [s, ok, one["taskName"], one["status"], one["nFiles"], one["task_creation_arguments"]]
s, files = Client.get_files_in_datasets(tid)
out["files"] = [s, [(x["dataset"]["name"], [f["status"] for f in x["files"]]) for x in files]]
s, jobs = Client.get_job_descriptions(tid)
out["jobs"] = [s, sorted(j["jediTaskID"] for j in jobs)]
out["pause"] = Client.pauseTask(tid)
out["pause_again"] = Client.pauseTask(tid)
out["resume"] = Client.resumeTask(tid)
out["increase"] = Client.increase_attempt_nr(tid, 2)
out["reload"] = Client.reload_input(tid)
out["finish"] = Client.finishTask(tid, soft=True)
b = Client.insertTaskParams(params("user.jdoe.b/"))
tid_b = task_id(b)
out["kill"] = Client.killTask(tid_b)
out["kill_unknown"] = Client.killTask(987654)
out["retry_running"] = Client.retryTask(tid_b)
out["reactivate_unknown"] = Client.reactivateTask(987654)
out["tids"] = [tid, tid_b]
print("RESULT:" + json.dumps(out, default=str))
"""

AFTER = r"""
import json
from pandaclient import Client
tid, tid_b = %(tids)s
out = {"a": Client.getTaskStatus(tid), "b": Client.getTaskStatus(tid_b)}
out["retry_done"] = Client.retryTask(tid)
out["reactivate"] = Client.reactivateTask(tid)
print("RESULT:" + json.dumps(out))
"""


def test_every_task_call_of_the_client(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'calls.sqlite'}", {"PANDA_DAEMON_PERIODS": "task_manager=1"}
    )
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE)})
    env = client_env(server.base, tmp_path, CLAIMS)
    r = run_client(SCRIPT % {"queue": QUEUE}, env)
    assert r["bad"][0] == 0 and r["bad"][1][0] == 4
    assert "task parameter nEventsPerJob: must be between 1" in r["bad"][1][1]
    assert r["submit"][0] == 0 and r["submit"][1][0] == 0
    tid, tid_b = r["tids"]
    assert r["dup"][1][0] == 2 and f"jediTaskID={tid} is in the running state" in r["dup"][1][1]
    assert r["status"] == [0, "running"]
    assert r["params"] == "user.jdoe.a/"
    assert r["ids"][0] == 0 and len(r["ids"][1]) == 2
    assert r["details"] == [0, "running", "user.jdoe.a.log/", 2, 2]
    assert r["modified"][:2] == [0, [str(tid)]] and r["modified"][2:] == ["running", 2]
    assert r["detailed"] == [0, [[tid, "running", "running", 2]]]
    assert r["detailed_info"] == [0, True, "user.jdoe.a/", "running", 2, None]
    assert r["files"] == [0, [["pseudo_dataset", ["running", "running"]]]]
    assert r["jobs"] == [0, [tid, tid]]
    # Extended replies carry JEDI's code in data when they succeed, the reason when they do not.
    assert r["pause"] == [0, [True, 0]]
    assert r["pause_again"][1][0] is False and "in paused status" in r["pause_again"][1][1]
    assert r["resume"][1][0] is True and r["increase"][1][0] is True and r["reload"][1][0] is True
    assert r["finish"] == [0, [True, 0]]
    assert r["kill"][1][0] is True
    assert r["kill_unknown"] == [0, [False, "jediTaskID=987654 not found"]]
    # Killed: while it is still aborting there is nothing to retry (code 4); once the task manager
    # made it aborted, JEDI retries it (code 0), as it does finished, failed and exhausted tasks.
    assert r["retry_running"][0] == 0 and r["retry_running"][1][0] in (0, 4), r["retry_running"]
    assert r["reactivate_unknown"][1][0] is False
    # The finishing task ends done once its two jobs finished; the killed one is aborted.
    drive_like_pilot(server.base, QUEUE, 2)
    assert wait_for_status(server.base, tid, "done") == "done"
    assert wait_for_status(server.base, tid_b, "aborted") == "aborted"
    after = run_client(AFTER % {"tids": [tid, tid_b]}, env)
    assert after["a"] == [0, "done"]
    assert after["b"] == [0, "aborted"]
    assert after["retry_done"][1][0] == 4 and "in done status" in after["retry_done"][1][1]
    assert after["reactivate"] == [0, [True, 0]]
