"""``prun --inDS`` end to end: the real prun, the real server, a real Rucio holding the dataset.

A dataset of three files is uploaded to a POSIX RSE with Rucio's upload client. prun submits a
task over it (``--nFilesPerJob 2``); the server's task manager lists the dataset's files in Rucio,
skips the log file prun excludes by default, and makes two jobs whose input files carry the
GUIDs, sizes, checksums and scope the pilot needs, at the queue that reads the RSE holding
the data (not at another queue that would otherwise be chosen). The jobs are fetched and
finished as the pilot does; the task ends done. A dataset Rucio does not know breaks its task with the reason.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.test_prun import run_cli, wait_for_status
from tests.rucio_server import RucioServer, rucio_server, upload_dataset  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "LOCAL_RUCIO"
OTHER = "AAA_OTHER_DISK"
SCOPE = "tests"


@pytest.fixture
def data_server(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> ServerProcess:
    pytest.importorskip("rucio.client", reason="rucio-clients is not installed (pip install -e '.[test]')")
    env = {
        "PANDA_DAEMON_PERIODS": "task_manager=2",
        **rucio_server.server_env(tmp_path),
        "PANDA_DDM_RUCIO_TIMEOUT": "60",
    }
    server = start_server(f"sqlite:///{tmp_path / 'indata.sqlite'}", env)
    queue = realpilot.queue_definition(QUEUE)
    queue["astorages"] = {"pr": ["PANDAWMS_DISK_A"], "pw": ["PANDAWMS_DISK_B"], "pl": ["PANDAWMS_DISK_B"]}
    # A queue that sorts first and reads only the other disk: brokerage must not pick it.
    other = realpilot.queue_definition(OTHER)
    other["astorages"] = {"pr": ["PANDAWMS_DISK_B"], "pw": ["PANDAWMS_DISK_B"], "pl": ["PANDAWMS_DISK_B"]}
    realpilot.load_queues(server.db_url, {QUEUE: queue, OTHER: other})
    return server


def _job_ids(base: str, task_id: int, count: int, timeout: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout
    ids: list[int] = []
    while time.monotonic() < deadline:
        ids = httpx.get(base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()["data"]
        if len(ids) >= count:
            break
        time.sleep(1)
    return ids


def test_prun_over_a_rucio_dataset(
    data_server: ServerProcess,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    server = data_server
    tag = secrets.token_hex(4)
    dataset = f"data.{tag}.input"
    files = {f"data.{tag}._{i:06d}.root": os.urandom(700 + 100 * i) for i in range(3)}
    files[f"data.{tag}.log.tgz.1"] = b"a log file prun leaves out by default"
    upload_dataset(rucio_server, tmp_path / "upload", "PANDAWMS_DISK_A", SCOPE, dataset, files, {})

    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (workdir / "analysis.py").write_text("print('my analysis')\n")
    out = run_cli(
        f'prun --exec "echo %IN" --inDS {SCOPE}:{dataset} --outDS user.jdoe.indata.{tag} '
        "--nFilesPerJob 2 --noBuild",
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    task_id = int(match.group(1))
    ids = _job_ids(server.base, task_id, 2)
    assert len(ids) == 2, (ids, server.log_path.read_text()[-3000:])

    data_files = sorted(n for n in files if n.endswith(".root"))
    headers = {"Accept": "application/json"}
    seen: list[str] = []
    for _ in ids:
        job = httpx.post(
            server.base + "/server/panda/getJob",
            headers=headers,
            data={"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "user", "node": "wn1"},
        ).json()
        assert job["StatusCode"] == 0, job
        names = job["inFiles"].split(",")
        seen.extend(names)
        assert job["realDatasetsIn"].split(",") == [f"{SCOPE}:{dataset}"] * len(names) or job[
            "realDatasetsIn"
        ].split(",") == [dataset] * len(names)
        assert job["scopeIn"].split(",") == [SCOPE] * len(names)
        for name, guid, size, checksum in zip(
            names, job["GUID"].split(","), job["fsize"].split(","), job["checksum"].split(","), strict=True
        ):
            assert len(guid) == 36 and guid == guid.upper(), guid
            assert int(size) == len(files[name])
            assert checksum == f"ad:{zlib.adler32(files[name]) & 0xFFFFFFFF:08x}"
        # prun's --exec "echo %IN" becomes runGen's -p with the job's files in ${IN/T}.
        assert all(n in job["jobPars"] for n in names), job["jobPars"]
        pid, attempt = job["PandaID"], job["attemptNr"]
        for state in ("starting", "running"):
            reply = httpx.post(
                server.base + "/server/panda/updateJob",
                headers=headers,
                data={"jobId": pid, "state": state, "attemptNr": attempt, "siteName": QUEUE, "node": "wn1"},
            ).json()
            assert reply["StatusCode"] == 0
        xml = {
            lfn: {"guid": "", "fsize": 7645, "adler32": "0988eb14", "surl": "/se/" + lfn}
            for lfn in job["outFiles"].split(",")
            if lfn
        }
        final = httpx.post(
            server.base + "/server/panda/updateJob",
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
    assert sorted(seen) == data_files  # each file once, the log file left out
    assert wait_for_status(server.base, task_id, "done", timeout=90) == "done"

    # A dataset Rucio does not know: the task is accepted, then broken with the reason.
    out = run_cli(
        f'prun --exec "echo %IN" --inDS {SCOPE}:no.such.{tag} --outDS user.jdoe.nodata.{tag} '
        f"--noBuild --site {QUEUE}",
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    missing = int(match.group(1))
    assert wait_for_status(server.base, missing, "broken", timeout=90) == "broken"

    # --nGBPerJob: files grouped by size instead of by count; the three fit in 1 GiB, one job.
    out = run_cli(
        f'prun --exec "echo %IN" --inDS {SCOPE}:{dataset} --outDS user.jdoe.bysize.{tag} '
        "--nGBPerJob 1 --noBuild",
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    sized = _job_ids(server.base, int(match.group(1)), 1)
    assert len(sized) == 1, sized
    job = httpx.post(
        server.base + "/server/panda/getJob",
        headers=headers,
        data={"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "user", "node": "wn1"},
    ).json()
    assert job["PandaID"] == sized[0] and sorted(job["inFiles"].split(",")) == data_files
