"""``prun --inDS`` over a dataset that is only on tape: the data carousel end to end.

The real prun submits a task over a dataset uploaded to the tape RSE of a real Rucio server. The
server's task manager finds it on tape only: the task waits in ``staging`` and a staging request
is queued; the server's data carousel pass makes a rule from the tape to the disk RSE the queue
reads. No transfer service runs in the tests, so the test completes the transfers itself (copies
the files and marks the replicas available, as a finished transfer does), one file first: that
file gets a job while the others are still on tape. Then the rest arrive, the request is done,
and the jobs are fetched and finished as the pilot does; the task ends ``done`` and the monitor's
task page and ``pandawms carousel`` show the request.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.test_prun import run_cli, wait_for_status
from tests.rucio_server import (  # noqa: F401 - the session fixture
    RucioServer,
    complete_transfers,
    rucio_server,
    upload_dataset,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "LOCAL_CAROUSEL"
SCOPE = "tests"
HEADERS = {"Accept": "application/json"}


@pytest.fixture
def carousel_server(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> ServerProcess:
    pytest.importorskip("rucio.client", reason="rucio-clients is not installed (pip install -e '.[test]')")
    env = {
        "PANDA_DAEMON_PERIODS": "task_manager=2,data_carousel=2",
        **rucio_server.server_env(tmp_path),
    }
    server = start_server(f"sqlite:///{tmp_path / 'carousel.sqlite'}", env)
    queue = realpilot.queue_definition(QUEUE)
    queue["astorages"] = {"pr": ["PANDAWMS_DISK_A"], "pw": ["PANDAWMS_DISK_B"], "pl": ["PANDAWMS_DISK_B"]}
    realpilot.load_queues(server.db_url, {QUEUE: queue})
    return server


def _job_ids(base: str, task_id: int, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    ids: list[int] = []
    while time.monotonic() < deadline:
        ids = httpx.get(base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()["data"]
        if len(ids) >= count:
            break
        time.sleep(0.5)
    return ids


def _run_one_job(base: str) -> list[str]:
    """Fetch one job as the pilot does, run it to finished; its input files."""
    job = httpx.post(
        base + "/server/panda/getJob",
        headers=HEADERS,
        data={"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "user", "node": "wn1"},
    ).json()
    assert job["StatusCode"] == 0, job
    pid, attempt = job["PandaID"], job["attemptNr"]
    for state in ("starting", "running"):
        reply = httpx.post(
            base + "/server/panda/updateJob",
            headers=HEADERS,
            data={"jobId": pid, "state": state, "attemptNr": attempt, "siteName": QUEUE, "node": "wn1"},
        ).json()
        assert reply["StatusCode"] == 0
    xml = {
        lfn: {"guid": "", "fsize": 100, "adler32": "0988eb14", "surl": "/se/" + lfn}
        for lfn in job["outFiles"].split(",")
        if lfn
    }
    final = httpx.post(
        base + "/server/panda/updateJob",
        headers=HEADERS,
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
    names: list[str] = job["inFiles"].split(",")
    return names


def _carousel_cli(server: ServerProcess, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "pandawms", "carousel", "--db-url", server.db_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prun_over_a_tape_dataset_stages_then_runs(
    carousel_server: ServerProcess,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    server = carousel_server
    tag = secrets.token_hex(4)
    dataset = f"data.{tag}.ontape"
    files = {f"data.{tag}._{i:06d}.root": os.urandom(500 + i) for i in range(3)}
    upload_dataset(rucio_server, tmp_path / "upload", "PANDAWMS_TAPE", SCOPE, dataset, files, {})
    names = sorted(files)

    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    out = run_cli(
        f'prun --exec "echo %IN" --inDS {SCOPE}:{dataset} --outDS user.jdoe.carousel.{tag} '
        "--nFilesPerJob 1 --noBuild",
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    task_id = int(match.group(1))
    assert wait_for_status(server.base, task_id, "staging") == "staging", server.log_path.read_text()[-3000:]

    # The carousel stages it: a rule from the tape to the queue's disk.
    deadline = time.monotonic() + 60
    listing: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listing = json.loads(_carousel_cli(server, "--task", str(task_id), "--json"))
        if listing and listing[0]["status"] == "staging":
            break
        time.sleep(1)
    (request,) = listing
    assert (request["dataset"], request["source_rse"], request["destination_rse"]) == (
        f"{SCOPE}:{dataset}",
        "PANDAWMS_TAPE",
        "PANDAWMS_DISK_A",
    )
    assert _job_ids(server.base, task_id, 1, timeout=6) == []
    # The task page shows what the task waits for (it has no job yet).
    page = httpx.get(f"{server.base}/monitor/task/{task_id}")
    assert page.status_code == 200 and "Staging from tape" in page.text, page.text[-2000:]
    assert f"{SCOPE}:{dataset}" in page.text and "PANDAWMS_DISK_A" in page.text and "0/3" in page.text
    detail = httpx.get(f"{server.base}/monitor/api/task/{task_id}").json()
    assert detail["status"] == "staging" and detail["staging"][0]["status"] == "staging"

    # One file arrives: one job, while the others are still on tape.
    complete_transfers(rucio_server, tmp_path / "t1", "PANDAWMS_TAPE", "PANDAWMS_DISK_A", SCOPE, names[:1])
    assert len(_job_ids(server.base, task_id, 1)) == 1
    assert wait_for_status(server.base, task_id, "running") == "running"
    assert _run_one_job(server.base) == names[:1]
    time.sleep(5)
    assert len(_job_ids(server.base, task_id, 2, timeout=1)) == 1  # the rest are still staging
    assert wait_for_status(server.base, task_id, "running", timeout=1) == "running"

    # The rest arrive: the request is done, two more jobs; all run, and the task is done.
    complete_transfers(rucio_server, tmp_path / "t2", "PANDAWMS_TAPE", "PANDAWMS_DISK_A", SCOPE, names[1:])
    assert len(_job_ids(server.base, task_id, 3)) == 3
    seen = names[:1] + _run_one_job(server.base) + _run_one_job(server.base)
    assert sorted(seen) == names
    assert wait_for_status(server.base, task_id, "done", timeout=90) == "done"
    (request,) = json.loads(_carousel_cli(server, "--task", str(task_id), "--json"))
    assert (request["status"], request["staged_files"], request["total_files"]) == ("done", 3, 3)
    table = _carousel_cli(server)
    assert f"{SCOPE}:{dataset}" in table and "done" in table and "PANDAWMS_DISK_A" in table
