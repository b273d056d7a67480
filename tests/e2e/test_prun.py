"""prun and pbook (panda-client 2.2.0) end to end: a task submitted, run by pilots, shown done.

prun uploads its sandbox and submits ``--exec "echo hello" --nJobs 3`` with a self-made OIDC
token over plain HTTP; the server turns the task into three jobs; the real pilot 3.7 runs them
when it can run here (see :mod:`tests.e2e.realpilot`), otherwise they are fetched and reported
over HTTP exactly as that pilot does (getJob, updateJob starting/running/finished with the log
file report). The worker-node script (runGen) is the test's own: it fetches the sandbox from
the server's ``/cache`` and runs the user's command. pbook must then show the task done.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.clients import client_env

pytestmark = [pytest.mark.e2e]

QUEUE = "LOCAL_PRUN"
CLAIMS = {
    "sub": "u-7",
    "name": "jane doe",
    "preferred_username": "jdoe",
    "groups": ["atlas"],
    "exp": 4102444800,
}
#: The worker-node script prun's jobs run: get the sandbox from the cache, run the command.
RUN_GEN = r"""
while [ $# -gt 0 ]; do
  case "$1" in
    --sourceURL) SURL=$2; shift ;;
    -a) ARCHIVE=$2; shift ;;
    -p) CMD=$2; shift ;;
  esac
  shift
done
if [ -n "$ARCHIVE" ]; then
  curl -sf -o "$ARCHIVE" "$SURL/cache/$ARCHIVE" || { echo "runGen: cannot fetch $ARCHIVE"; exit 3; }
fi
CMD=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.argv[1]))' "$CMD")
echo "runGen: running $CMD"
sh -c "$CMD"
"""

#: The build step's script: the "library" is the sandbox, fetched from the cache.
BUILD_GEN = r"""
while [ $# -gt 0 ]; do
  case "$1" in
    --sourceURL) SURL=$2; shift ;;
    -i) IN=$2; shift ;;
    -o) OUT=$2; shift ;;
  esac
  shift
done
curl -sf -o "$OUT" "$SURL/cache/$IN" || { echo "buildGen: cannot fetch $IN"; exit 3; }
echo "buildGen: built $OUT from $IN"
"""


def _panda_setup() -> Path:
    pytest.importorskip("pandaclient", reason="panda-client is not installed (pip install -e '.[test]')")
    setup = Path(sys.prefix) / "etc" / "panda" / "panda_setup.sh"
    if not setup.is_file():
        pytest.skip(f"panda-client's {setup} is missing")
    return setup


def run_cli(command: str, server: ServerProcess, home: Path, workdir: Path) -> str:
    """Run a panda-client command line (prun, pbook) as a user would, after panda_setup.sh."""
    env = client_env(server.base, home / "pandacfg", CLAIMS)
    env["HOME"] = str(home)
    script = f"source {_panda_setup()} && export PANDA_CONFIG_ROOT={home / 'pandacfg'} && cd {workdir} && {command}"
    proc = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )
    return proc.stdout + proc.stderr


def drive_like_pilot(base: str, queue: str, count: int) -> list[int]:
    """Fetch and report ``count`` jobs with pilot 3.7's requests (form in, JSON out)."""
    done: list[int] = []
    headers = {"Accept": "application/json"}
    for _ in range(count):
        job = httpx.post(
            base + "/server/panda/getJob",
            headers=headers,
            data={"siteName": queue, "computingElement": queue, "prodSourceLabel": "user", "node": "wn1"},
        ).json()
        assert job["StatusCode"] == 0, job
        pid, attempt = job["PandaID"], job["attemptNr"]
        for state in ("starting", "running"):
            reply = httpx.post(
                base + "/server/panda/updateJob",
                headers=headers,
                data={"jobId": pid, "state": state, "attemptNr": attempt, "siteName": queue, "node": "wn1"},
            ).json()
            assert reply == {"StatusCode": 0, "command": "NULL"}
        xml = {
            lfn: {"guid": "", "fsize": 7645, "adler32": "0988eb14", "surl": "/se/" + lfn}
            for lfn in job["outFiles"].split(",")
            if lfn
        }
        final = httpx.post(
            base + "/server/panda/updateJob",
            headers=headers,
            data={
                "jobId": pid,
                "state": "finished",
                "attemptNr": attempt,
                "transExitCode": 0,
                "pilotErrorCode": 0,
                "xml": json.dumps(xml),
            },
        ).json()
        assert final["StatusCode"] == 0
        done.append(pid)
    return done


def run_real_pilots(base: str, workdir: Path, count: int) -> list[realpilot.PilotRun]:
    """``count`` real pilots at once, each in its own PID namespace and directory."""
    trf = workdir / "trf"
    realpilot.write_payload(trf, "runGen-00-00-02", RUN_GEN)
    realpilot.write_payload(trf, "buildGen-00-00-01", BUILD_GEN)
    runs: list[realpilot.PilotRun] = []

    def one(index: int) -> None:
        runs.append(
            realpilot.run_one_pilot(base, QUEUE, workdir / f"pilot-{index}", timeout=200, trf_dir=trf)
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


def wait_for_status(base: str, task_id: int, wanted: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = httpx.get(base + "/api/v1/task/get_status", params={"task_id": task_id}).json()["data"]
        if status == wanted:
            return status
        time.sleep(0.5)
    return status


@pytest.fixture
def prun_server(start_server: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    _panda_setup()
    server = start_server(f"sqlite:///{tmp_path / 'prun.sqlite'}", {"PANDA_DAEMON_PERIODS": "task_manager=2"})
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE)})
    return server


def test_prun_three_jobs_run_and_pbook_shows_done(prun_server: ServerProcess, tmp_path: Path) -> None:
    server = prun_server
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (workdir / "analysis.py").write_text("print('my analysis')\n")
    refused = run_cli(
        'prun --exec "echo hello" --outDS user.jdoe.bad --nJobs 3 --noBuild --site NO_SUCH_QUEUE',
        server,
        home,
        workdir,
    )
    assert "task submission failed. task parameter site: no queue named 'NO_SUCH_QUEUE'" in refused, refused
    out = run_cli(
        f'prun --exec "echo hello" --outDS user.jdoe.e2e --nJobs 3 --noBuild --site {QUEUE}',
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    task_id = int(match.group(1))
    params = httpx.get(server.base + "/api/v1/task/get_task_parameters", params={"task_id": task_id}).json()
    assert params["data"]["cliParams"].startswith("prun --exec")
    ids = httpx.get(server.base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()["data"]
    assert len(ids) == 3

    reason = realpilot.unavailable_reason() if os.environ.get("PANDAWMS_PRUN_HTTP_ONLY") != "1" else "asked"
    if reason is None:
        runs = run_real_pilots(server.base, tmp_path / "pilots", 3)
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for r in runs for p in (r.stdout_path,))
        assert sorted(pid for r in runs for pid in r.job_ids) == ids, logs
        # Each payload fetched the sandbox from /cache and ran the user's command.
        outputs = sorted((tmp_path / "pilots").rglob("payload.stdout"))
        assert len(outputs) == 3, logs
        assert all("runGen: running echo hello\nhello" in p.read_text() for p in outputs), logs
    else:
        assert drive_like_pilot(server.base, QUEUE, 3) == ids
    described = httpx.post(
        server.base + "/api/v1/job/get_description_incl_archive", json={"job_ids": ids}
    ).json()
    assert [j["jobStatus"] for j in described["data"]] == ["finished"] * 3, described
    assert wait_for_status(server.base, task_id, "done") == "done"

    shown = run_cli("pbook -c 'show()'", server, home, workdir)
    row = next((line for line in shown.splitlines() if "user.jdoe.e2e" in line), "")
    assert str(task_id) in row and "done" in row and "100%" in row, shown
    long = run_cli(f"pbook -c 'show({task_id}, format=\"long\")'", server, home, workdir)
    assert "3|0|3" in long, long
    again = run_cli(f"pbook -c 'retry({task_id})'", server, home, workdir)
    assert "cannot be executed" in again and "done status" in again, again


def test_prun_with_build_job(prun_server: ServerProcess, tmp_path: Path) -> None:
    """Without --noBuild prun asks for a build job first; the run jobs use the library it makes."""
    server = prun_server
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (workdir / "analysis.py").write_text("print('my analysis')\n")
    out = run_cli(
        f'prun --exec "echo hello" --outDS user.jdoe.lib --nJobs 3 --site {QUEUE}', server, home, workdir
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    task_id = int(match.group(1))
    real = realpilot.unavailable_reason() is None and os.environ.get("PANDAWMS_PRUN_HTTP_ONLY") != "1"
    if real:
        # Pilots one after another: the first runs the build job and, once the task manager
        # made them, the run jobs too (a pilot asks for more work while there is some).
        trf = tmp_path / "trf"
        realpilot.write_payload(trf, "runGen-00-00-02", RUN_GEN)
        realpilot.write_payload(trf, "buildGen-00-00-01", BUILD_GEN)
        result = realpilot.run_pilot(
            server.base, QUEUE, tmp_path / "pilots", timeout=300, max_jobs=4, trf_dir=trf
        )
        ids = httpx.get(server.base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()["data"]
        assert len(ids) == 4 and sorted(result.job_ids) == ids, result.logs()[-5000:]
        outputs = "".join(p.read_text() for p in (tmp_path / "pilots").rglob("payload.stdout"))
        assert (
            outputs.count("buildGen: built") == 1 and outputs.count("runGen: running echo hello\nhello") == 3
        )
    else:
        (build,) = drive_like_pilot(server.base, QUEUE, 1)
        deadline = time.monotonic() + 30
        ids = []
        while time.monotonic() < deadline and len(ids) < 4:
            ids = httpx.get(server.base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()[
                "data"
            ]
            time.sleep(0.5)
        assert ids[0] == build and len(ids) == 4
        assert drive_like_pilot(server.base, QUEUE, 3) == ids[1:]
    assert wait_for_status(server.base, task_id, "done") == "done"
    jobs = httpx.post(server.base + "/api/v1/job/get_description_incl_archive", json={"job_ids": ids}).json()[
        "data"
    ]
    lib = jobs[0]["Files"][0]["lfn"]
    assert jobs[0]["prodSourceLabel"] == "panda" and lib.endswith(".lib.tgz")
    assert all(f"-l {lib} " in j["jobParameters"] for j in jobs[1:])
