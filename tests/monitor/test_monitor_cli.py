"""The terminal views (pandawms jobs / jobs show / jobs why / tasks), tested through their output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pandawms.core.jobs import dispatch, heartbeat, submit
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")
QUEUES = {
    "TEST_SITE": {"status": "online", "type": "unified", "corecount": 1},
    "OFF_SITE": {"status": "offline", "type": "unified", "corecount": 1},
}


class Scene:
    """A small database with a job in every interesting situation."""

    def __init__(self, rt: Runtime) -> None:
        self.url = str(rt.engine.url)
        load_queues(rt, json.dumps(QUEUES))

        def one(**attrs: object) -> int:
            return int(submit.submit_jobs(rt, [make_job(**attrs)], ALICE)[0][0])

        self.failed = one(jediTaskID=77, files=[make_file("out.root"), make_file("job.log.tgz", "log")])
        self.running = one(jediTaskID=77)
        self.finished = one(jediTaskID=77)
        req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=3, prod_source_label="user", node="wn1")
        assert sorted(j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)) == [
            self.failed,
            self.running,
            self.finished,
        ]
        for pid in (self.failed, self.running, self.finished):
            heartbeat.update_job(rt, PilotUpdate(pid, "running", 0, {"modificationHost": "wn1"}))
        heartbeat.update_job(
            rt,
            PilotUpdate(
                self.failed,
                "failed",
                0,
                {"pilotErrorCode": 1305, "pilotErrorDiag": "Payload exited with code 3", "exeErrorCode": 3},
            ),
        )
        heartbeat.update_job(rt, PilotUpdate(self.finished, "finished", 0, {}))
        self.first_in_line = one(jediTaskID=78, assignedPriority=2000, currentPriority=2000)
        self.behind = one(jediTaskID=78, assignedPriority=10, currentPriority=10)
        self.offline = one(site="OFF_SITE", jediTaskID=79)
        self.unplaced = one(site=None, jediTaskID=80, coreCount=64)


@pytest.fixture
def scene(sqlite_rt: Runtime) -> Scene:
    return Scene(sqlite_rt)


def run(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pandawms ARGS`` in a subprocess with a fixed terminal width."""
    proc = subprocess.run(
        [sys.executable, "-m", "pandawms", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_summary_like_condor_q(scene: Scene) -> None:
    out = run("jobs", "--db-url", scene.url).stdout
    lines = out.splitlines()
    assert lines[0].startswith("-- pandawms jobs @ ") and "live table" in lines[0]
    header = lines[1].split()
    assert header[0] == "QUEUE" and header[-1] == "TOTAL"
    assert header[1:-1] == ["DEFINED", "ACTIVATED", "RUNNING", "FINISHED", "FAILED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line and not line.startswith("7 jobs")}
    assert rows["TEST_SITE"] == [".", "2", "1", "1", "1", "5"]
    assert rows["OFF_SITE"] == [".", "1", ".", ".", ".", "1"]
    assert rows["(no"] == ["queue)", "1", ".", ".", ".", ".", "1"]
    assert rows["TOTAL"] == ["1", "3", "1", "1", "1", "7"]
    assert lines[-1] == "7 jobs: 1 defined, 3 activated, 1 running, 1 finished, 1 failed"
    assert "\033[" not in out  # not a terminal: no colour


def test_filters_and_colour(scene: Scene) -> None:
    out = run("jobs", "--db-url", scene.url, "--status", "failed,running", "--queue", "TEST_SITE").stdout
    assert out.splitlines()[1].split() == ["QUEUE", "RUNNING", "FAILED", "TOTAL"]
    assert "status=failed,running queue=TEST_SITE" in out.splitlines()[0]
    assert out.splitlines()[-1] == "2 jobs: 1 running, 1 failed"
    by_task = run("jobs", "--db-url", scene.url, "--task", "78").stdout
    assert by_task.splitlines()[-1] == "2 jobs: 2 activated"
    by_user = run("jobs", "--db-url", scene.url, "--user", "Alice Smith").stdout
    assert by_user.splitlines()[-1].startswith("7 jobs")
    nobody = run("jobs", "--db-url", scene.url, "--user", "nobody").stdout
    assert nobody.splitlines()[-1] == "0 jobs"
    coloured = run("jobs", "--db-url", scene.url, "--color", "always").stdout
    assert "\033[31;1m" in coloured and "\033[32m" in coloured  # failed red, running green
    bad = run("jobs", "--db-url", scene.url, "--status", "sleeping", check=False)
    assert bad.returncode == 2 and "unknown status sleeping" in bad.stderr


def test_narrow_terminal_uses_short_headers(scene: Scene) -> None:
    out = run("jobs", "--db-url", scene.url, env={"COLUMNS": "40"}).stdout
    assert out.splitlines()[1].split() == ["QUEUE", "DEF", "ACT", "RUN", "DONE", "FAIL", "TOTAL"]


def test_show_explains_the_failure(scene: Scene) -> None:
    out = run("jobs", "show", str(scene.failed), "--db-url", scene.url).stdout
    assert out.splitlines()[0] == f"Job {scene.failed} — failed at TEST_SITE (live table)"
    assert "Why it failed: pilot 1305: the payload failed" in out
    assert "Payload exited with code 3" in out
    history = out.split("History")[1].split("Files")[0]
    assert [line.split("->")[1].split()[0] for line in history.strip().splitlines()] == [
        "activated",
        "sent",
        "running",
        "holding",
        "failed",
    ]
    assert "out.root" in out and "job.log.tgz" in out
    assert "pilotErrorCode           1305" in out
    as_json = json.loads(run("jobs", "show", str(scene.failed), "--json", "--db-url", scene.url).stdout)
    assert as_json["errors"][0]["source"] == "pilot" and as_json["errors"][0]["code"] == 1305
    missing = run("jobs", "show", "999999", "--db-url", scene.url, check=False)
    assert missing.returncode == 1 and "no job 999999" in missing.stderr


def test_why_explains_waiting_jobs(scene: Scene) -> None:
    behind = run("jobs", "why", str(scene.behind), "--db-url", scene.url).stdout
    assert "1 other activated job(s) at TEST_SITE come first" in behind
    first = run("jobs", "why", str(scene.first_in_line), "--db-url", scene.url).stdout
    assert "come first" not in first
    assert "last_pilot_activity" in first
    offline = run("jobs", "why", str(scene.offline), "--db-url", scene.url).stdout
    assert f"Job {scene.offline}: queue OFF_SITE is not online (status offline" in offline
    unplaced = run("jobs", "why", str(scene.unplaced), "--db-url", scene.url).stdout
    assert "no queue fits" in unplaced and "too few cores" in unplaced
    done = run("jobs", "why", str(scene.finished), "--db-url", scene.url).stdout
    assert "the job is finished: it will not run again" in done
    running = run("jobs", "why", str(scene.running), "--db-url", scene.url).stdout
    assert "not waiting: it is running" in running


def test_tasks_grouped_by_jeditaskid(scene: Scene) -> None:
    out = run("tasks", "--db-url", scene.url).stdout
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["TASK", "USER", "JOBS", "DONE%", "FAIL%"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"77", "78", "79", "80"}
    assert "running 1" in rows["77"] and "finished 1" in rows["77"] and "failed 1" in rows["77"]
    assert " 3 " in rows["77"] and "66.7%" in rows["77"] and "33.3%" in rows["77"]
    only = run("tasks", "--db-url", scene.url, "--task", "78").stdout
    assert [line.split()[0] for line in only.splitlines()[1:]] == ["78"]


def test_watch_refreshes_until_ctrl_c(scene: Scene) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "jobs", "--db-url", scene.url, "--watch", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.count("-- pandawms jobs @") >= 2
    assert "refreshing every 0.3 s; Ctrl-C to stop" in out


def test_missing_database_is_a_clear_error(tmp_path: Path, make_runtime: Callable[..., Runtime]) -> None:
    proc = run("jobs", "--db-url", f"sqlite:///{tmp_path / 'absent.sqlite'}", check=False)
    assert proc.returncode == 2 and "no database at" in proc.stderr


def test_operator_reassigns_jobs_and_sets_task_priority(sqlite_rt: Runtime) -> None:
    from pandawms.core.ops import audit
    from pandawms.core.tasks import commands as tasks
    from tests.core.tasks.test_tasks import JANE, _queue, prun_params

    scene = Scene(sqlite_rt)
    moved = run("jobs", "reassign", str(scene.offline), "--site", "TEST_SITE", "--db-url", scene.url).stdout
    assert moved.strip() == f"{scene.offline}: reassigned to TEST_SITE"
    refused = run("jobs", "reassign", str(scene.running), "--db-url", scene.url, check=False)
    assert refused.returncode == 1 and "not reassigned" in refused.stdout
    _queue(sqlite_rt)
    task_id = tasks.submit_task(sqlite_rt, prun_params(), JANE).data
    assert (
        run("tasks", "priority", str(task_id), "1234", "--db-url", scene.url).stdout.strip()
        == "1 tasks changed"
    )
    missing = run("tasks", "priority", "999999", "5", "--db-url", scene.url, check=False)
    assert missing.returncode == 1 and "Task not found" in missing.stderr
    rows = audit.search(sqlite_rt, limit=10)
    assert [r["method"] for r in rows[:4]] == [
        "task/change_priority",
        "task/change_priority",
        "job/reassign",
        "job/reassign",
    ]
    assert {r["identity"] for r in rows[:4]} == {"/CN=pandawms CLI"}
