"""Harvester's own PanDA communicator against the real server (when Harvester is available).

Harvester is not on the package index, so this runs only where a Harvester source tree and an
interpreter with its communicator's dependencies (requests, panda-common) are given:

    PANDA_TEST_HARVESTER_SRC=<checkout of HSF/harvester>
    PANDA_TEST_HARVESTER_PYTHON=<python with requests and panda-common>

The file is named so that the normal run does not collect it (CI has no Harvester, and a
skipped test fails CI); run it by naming it:

    .venv/bin/pytest tests/e2e/harvester_real_check.py

``test_harvester_api.py`` covers the same cycle in every run by replaying the communicator's
requests. The driver (``harvester_driver.py``) calls only the communicator's public methods with
Harvester's own WorkSpec and JobSpec objects.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

SRC = os.environ.get("PANDA_TEST_HARVESTER_SRC", "")
PYTHON = os.environ.get("PANDA_TEST_HARVESTER_PYTHON", "")
DRIVER = Path(__file__).with_name("harvester_driver.py")

pytestmark = pytest.mark.skipif(
    not (SRC and PYTHON),
    reason="Harvester is not installable from the index; set PANDA_TEST_HARVESTER_SRC and PANDA_TEST_HARVESTER_PYTHON",
)


def _harvester_home(tmp: Path, base: str) -> tuple[Path, Path]:
    """A Harvester configuration naming ``base``, and shims for the top-level module names
    Harvester imports from panda-common (liveconfigparser, pandalogger, pandautils)."""
    home = tmp / "harvester"
    (home / "etc" / "panda").mkdir(parents=True)
    (home / "log").mkdir()
    (home / "etc" / "panda" / "panda_harvester.cfg").write_text(
        "[master]\nharvester_id = hv-real\nuname =\ngname =\nloggername = harvester\n\n"
        f"[db]\nengine = sqlite\ndatabase_filename = {home}/harvester.db\nverbose = False\n\n"
        f"[pandacon]\nserver_api_url_ssl = {base}/api/v1\ncache_api_url_ssl = {base}/api/v1\n"
        "timeout = 30\nverbose = True\nauth_type = x509\nca_cert = False\n\n"
        f"[log]\nlogdir = {home}/log\n"
    )
    # panda-common's logger settings; the log hosts are never contacted (loopback anyway)
    (home / "etc" / "panda" / "panda_common.cfg").write_text(
        "[logger]\nloghost = 127.0.0.1\nmonport-apache = 9\nmethod = GET\nencoding = url\n"
        "loghost_new = 127.0.0.1\nmonport-apache_new = 9\nmethod_new = POST\nencoding_new = json\n"
        f"monurlprefix = /logger\nlogdir = {home}/log\nnemitters = 1\nmigrated = True\nlog_level = DEBUG\n"
        "rotating_policy = none\nrotating_backup_count = 1\nrotating_max_size = 1024\nrotating_interval = 24\n"
    )
    common = subprocess.run(
        [PYTHON, "-c", "import os, pandacommon; print(os.path.dirname(pandacommon.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shims = tmp / "shims"
    shims.mkdir()
    for name in ("liveconfigparser", "pandalogger", "pandautils"):
        (shims / name).symlink_to(Path(common) / name)
    return home, shims


def test_the_real_communicator_runs_a_whole_cycle(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    jobs = [make_job(site="HV_QUEUE", prodSourceLabel="managed") for _ in range(2)]
    submitted = httpx.post(
        sqlite_server.base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
    ).json()
    ids = [a[0] for a in submitted["data"]]
    home, shims = _harvester_home(tmp_path, sqlite_server.base)
    env = {**os.environ, "PANDA_HOME": str(home), "PYTHONPATH": f"{SRC}{os.pathsep}{shims}"}
    proc = subprocess.Popen(
        [PYTHON, str(DRIVER)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY"):
            break
    else:
        pytest.fail("driver stopped early:\n" + "".join(lines))
    # between the two phases an operator kills the first job
    assert httpx.post(sqlite_server.base + "/api/v1/job/kill", json={"job_ids": [ids[0]]}).json()["data"] == [
        True
    ]
    out, _ = proc.communicate("go\n", timeout=120)
    result: dict[str, Any] | None = None
    for line in out.splitlines():
        if line.startswith("RESULT:"):
            result = json.loads(line[len("RESULT:") :])
    assert result is not None, "".join(lines) + out
    assert result["check_panda"] is True
    assert result["is_alive"] == [True, ""]
    assert result["max_worker_id_before"] == [True, ""]
    assert result["get_jobs"] == [ids, "OK"]
    assert result["update_workers"] == [[True, True], "OK"]
    assert result["max_worker_id_after"] == [True, 42]
    assert result["update_jobs_running"] == [{"StatusCode": 0, "command": "NULL"}] * 2
    assert [c["status"] for c in result["check_jobs"]] == ["running", "running"]
    assert result["update_worker_stats"] == [True, "OK"]
    assert result["worker_stats"] == {
        "HV_QUEUE": {"hv-real": {"managed": {"SCORE": {"running": 2, "submitted": 1}}}}
    }
    assert result["service_metrics"] == [True, ""]
    assert result["dialogs"] == [True, ""]
    assert [(c["command"], c["params"]) for c in result["commands"]] == [("SYNC_WORKERS_KILL", [41])]
    assert result["commands_again"] == []
    assert result["ack"] is True
    assert result["update_jobs_final"] == [{"StatusCode": 0, "command": "NULL"}]
    statuses = httpx.get(sqlite_server.base + "/api/v1/job/get_status", params={"job_ids": ids}).json()[
        "data"
    ]
    assert [s["status"] for s in statuses] == ["running", "finished"]
    assert statuses[0]["command"] == "tobekilled"
