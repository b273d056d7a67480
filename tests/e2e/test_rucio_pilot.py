"""Data with Rucio end to end: prun over a Rucio dataset, the real pilot 3.11 staging with Rucio.

A dataset of two files is uploaded to a POSIX RSE with Rucio's upload client. The real prun
(panda-client 2.2.0) submits ``--inDS ... --outDS ... --outputs out.txt``; the server makes one
job at the queue that reads that RSE. The real pilot 3.11 (in its own PID namespace, with
PILOT_NOKILL) stages the inputs in from the RSE with its Rucio copytool, runs the payload,
and stages the output and the log out to the queue's write RSE with the same copytool (which
uploads without registering). pandawms then registers them (the Adder, from its DDM outbox) in
the task's output datasets: ``rucio list-files`` shows them with the checksums of the bytes the
payload wrote, the datasets are closed, and pbook shows the task done.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.test_prun import run_cli, wait_for_status
from tests.rucio_server import RucioServer, rucio_server, upload_dataset  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "LOCAL_RUCIO311"
READ_RSE, WRITE_RSE = "PANDAWMS_DISK_A", "PANDAWMS_DISK_B"
SCOPE = "tests"

#: The worker-node script: the staged-in files are in the job directory; run the user's
#: command with %IN replaced by them, and rename each output to the LFN the job wants.
RUN_GEN = r"""
while [ $# -gt 0 ]; do
  case "$1" in
    -i) IN=$2; shift ;;
    -o) OUT=$2; shift ;;
    -p) CMD=$2; shift ;;
  esac
  shift
done
python3 - "$IN" "$OUT" "$CMD" <<'EOF'
import ast, os, subprocess, sys, urllib.parse
inputs = ast.literal_eval(sys.argv[1]) if sys.argv[1] else []
outputs = ast.literal_eval(sys.argv[2]) if sys.argv[2] else {}
command = urllib.parse.unquote(sys.argv[3]).replace("%IN", " ".join(inputs))
for name in inputs:
    assert os.path.isfile(name), f"runGen: input {name} was not staged in"
print("runGen: running", command, flush=True)
code = subprocess.call(command, shell=True)
for local, lfn in outputs.items():
    os.rename(local, lfn)
sys.exit(code)
EOF
"""


@pytest.fixture(autouse=True)
def _pilot_available() -> None:
    reason = realpilot.unavailable_reason_311()
    if reason is not None:
        if os.environ.get("PANDAWMS_REQUIRE_PILOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _storage() -> dict[str, Any]:
    """The DDM endpoints as the pilot reads them (CRIC's ddmendpoints form)."""
    return {
        name: {
            "name": name,
            "type": "DATADISK",
            "token": "",
            "is_deterministic": True,
            "state": "ACTIVE",
            "site": "LOCAL",
            "rprotocols": {},
            "arprotocols": {},
            "resource": {"bucket_id": 0},
        }
        for name in (READ_RSE, WRITE_RSE)
    }


@pytest.fixture
def rucio_data_server(
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> ServerProcess:
    pytest.importorskip("rucio.client", reason="rucio-clients is not installed (pip install -e '.[test]')")
    env = {
        "PANDA_DAEMON_PERIODS": "task_manager=2,ddm_outbox=2,ddm_rules=2",
        **rucio_server.server_env(tmp_path),
        "PANDA_WN_SCRIPT_BASE_URL": realpilot.TRF_BASE_311,
    }
    server = start_server(f"sqlite:///{tmp_path / 'rucio311.sqlite'}", env)
    queue = realpilot.queue_definition(
        QUEUE,
        timefloor=0,
        copytools={"rucio": {}},
        acopytools={"pr": ["rucio"], "pw": ["rucio"], "pl": ["rucio"], "default": ["rucio"]},
        # The pilot writes a user job's outputs for the write_lan(_analysis) activity, its log
        # for pl, and reads for pr/read_lan.
        astorages={
            "pr": [READ_RSE],
            "read_lan": [READ_RSE],
            "pw": [WRITE_RSE],
            "pl": [WRITE_RSE],
            "write_lan": [WRITE_RSE],
        },
    )
    realpilot.load_queues(server.db_url, {QUEUE: queue})
    return server


def _rucio(server: RucioServer, cfg: Path, *args: str) -> str:
    """The ``rucio`` command line of rucio-clients, as a user runs it."""
    rucio_bin = Path(sys.executable).with_name("rucio")
    env = {**os.environ, "RUCIO_CONFIG": str(cfg)}
    done = subprocess.run(
        [str(rucio_bin), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_prun_over_rucio_with_the_real_pilot(
    rucio_data_server: ServerProcess,
    rucio_server: RucioServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    server = rucio_data_server
    tag = secrets.token_hex(4)
    dataset = f"data.{tag}.input"
    files = {f"data.{tag}._{i:06d}.txt": f"line {i} of {tag}\n".encode() * (10 + i) for i in range(2)}
    upload_dataset(rucio_server, tmp_path / "upload", READ_RSE, SCOPE, dataset, files, {})

    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (workdir / "analysis.py").write_text("print('my analysis')\n")
    out_ds = f"user.jdoe.rucio.{tag}"
    out = run_cli(
        f'prun --exec "cat %IN > out.txt" --outputs out.txt --inDS {SCOPE}:{dataset} --outDS {out_ds} '
        "--nFilesPerJob 2 --noBuild",
        server,
        home,
        workdir,
    )
    match = re.search(r"succeeded\. new jediTaskID=(\d+)", out)
    assert match, out
    task_id = int(match.group(1))

    # The pilot uses Rucio with the same configuration a user of this Rucio has.
    cfg = rucio_server.client_config(tmp_path / "rucio.cfg")
    trf = tmp_path / "trf"
    realpilot.write_payload(trf, "runGen-00-00-02", RUN_GEN)
    deadline = time.monotonic() + 90
    ids: list[int] = []
    while time.monotonic() < deadline and not ids:
        ids = httpx.get(server.base + "/api/v1/task/get_job_ids", params={"task_id": task_id}).json()["data"]
        time.sleep(1)
    assert len(ids) == 1, server.log()[-3000:]
    result = realpilot.run_pilot(
        server.base,
        QUEUE,
        tmp_path / "pilots",
        timeout=420,
        max_jobs=1,
        trf_dir=trf,
        version="3.11",
        extra_env={"RUCIO_CONFIG": str(cfg), "RUCIO_ACCOUNT": rucio_server.account},
        # Every other external URL of the pilot's configuration is closed: Rucio's is given.
        extra_args=("--rucio-host", rucio_server.url),
        storage=_storage(),
    )
    logs = result.logs()[-20000:] + "\n==== server\n" + server.log()[-5000:]
    assert result.job_ids == ids, logs
    assert wait_for_status(server.base, task_id, "done", timeout=120) == "done", logs

    (job,) = httpx.post(
        server.base + "/api/v1/job/get_description_incl_archive", json={"job_ids": ids}
    ).json()["data"]
    assert job["jobStatus"] == "finished", job
    # The pilot staged the inputs in from the RSE with Rucio (not from a local copy).
    pilot_log = "\n".join(
        p.read_text(errors="replace")
        for run in result.runs
        for p in (run.log_path, run.stdout_path)
        if p.is_file()
    )
    assert "rucio copytool, downloading file" in pilot_log, logs
    assert "rucio copytool, uploading file" in pilot_log, logs

    # rucio list-files on the output dataset: the output, with the checksum of what the payload
    # wrote (the inputs, concatenated in name order).
    expected = b"".join(files[name] for name in sorted(files))
    outputs = {f["lfn"]: f for f in job["Files"] if f["type"] == "output"}
    (lfn,) = outputs
    container = f"user.jdoe:{out_ds}_out.txt"
    rows = [
        line.split(",")
        for line in _rucio(rucio_server, cfg, "list-files", "--csv", f"{container}.{task_id}").splitlines()
        if line.count(",") == 4
    ]
    assert [r[0] for r in rows] == [f"user.jdoe:{lfn}"], rows
    ((_, guid, adler32, size, _),) = rows
    assert adler32 == f"{zlib.adler32(expected) & 0xFFFFFFFF:08x}", (rows, len(expected))
    assert size.split()[0].split(".")[0] == str(len(expected)), rows  # the payload's bytes (< 1 kB)
    assert (
        guid.replace("-", "").lower() == outputs[lfn]["GUID"].replace("-", "").lower()
        or not outputs[lfn]["GUID"]
    ), (rows, outputs)
    # The human view of the same (what a user types).
    assert lfn in _rucio(rucio_server, cfg, "list-files", f"{container}.{task_id}")
    # The files are on the queue's write RSE: the output holds what the payload wrote, the log
    # tarball the payload's output.
    (stored,) = rucio_server.rse_dirs[WRITE_RSE].rglob(lfn)
    assert stored.read_bytes() == expected
    log_lfn = next(f["lfn"] for f in job["Files"] if f["type"] == "log")
    (tarball,) = rucio_server.rse_dirs[WRITE_RSE].rglob(log_lfn)
    with tarfile.open(tarball) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/payload.stdout"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert "runGen: running cat " in extracted.read().decode(), log_lfn
    # The log went into the log dataset; the task's datasets are closed now it is done.
    logs_listed = _rucio(rucio_server, cfg, "list-files", f"user.jdoe:{out_ds}.log.{task_id}")
    assert ".log.tgz" in logs_listed, logs_listed
    deadline = time.monotonic() + 60
    shown = ""
    while time.monotonic() < deadline:
        shown = _rucio(rucio_server, cfg, "get-metadata", f"{container}.{task_id}")
        if re.search(r"is_open:\s*False", shown):
            break
        time.sleep(2)
    assert re.search(r"is_open:\s*False", shown), shown
    pbook = run_cli("pbook -c 'show()'", server, home, workdir)
    row = next((line for line in pbook.splitlines() if out_ds in line), "")
    assert str(task_id) in row and "done" in row, pbook
