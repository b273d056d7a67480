"""Operator methods of the v1 API on a strict server over HTTPS with certificates, as clients send them.

panda-client 2.2.0 has no functions for these methods (its newer versions post the same JSON
bodies to the same paths), so they are driven the way its HttpClientV1 sends: JSON POST bodies,
GET query strings. Each method is tried by someone without the right first and must be refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Pki, make_pki
from tests.core.tasks.test_tasks import prun_params
from tests.e2e.httpd_proc import Httpd
from tests.e2e.test_auth_strict import _curl
from tests.jobs import make_job, state_list

BOSS_CN = "Prod Boss"
QUEUES = {
    name: {"name": name, "status": "online", "state": "ACTIVE", "type": "unified", "corecount": 1}
    for name in ("TASK_Q", "Q_B")
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def strict(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    server = Httpd(
        tmp_path,
        pki,
        workers=1,
        auth_mode="strict",
        production_dns=f"/DC=org/DC=pandawms/OU=Users/CN={BOSS_CN}",
    )
    spec = tmp_path / "queues.json"
    spec.write_text(json.dumps(QUEUES))
    subprocess.run(
        [sys.executable, "-m", "pandawms", "queues", "load", str(spec)],
        env=server.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield server
    server.stop()


def _post(server: Httpd, pki: Pki, cert: Path, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, text = _curl(f"{server.https}/api/v1/{path}", pki, cert, body)
    return code, json.loads(text)


def _get(server: Httpd, pki: Pki, cert: Path, path: str, query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, text = _curl(f"{server.https}/api/v1/{path}?{urllib.parse.urlencode(query)}", pki, cert)
    return code, json.loads(text)


def test_job_methods_owner_production_and_refusals(strict: Httpd, pki: Pki) -> None:
    bob, boss = pki.add_user("Bob Jones"), pki.add_user(BOSS_CN)
    code, reply = _post(
        strict, pki, pki.proxy, "job/submit", {"jobs": json.dumps([state_list(make_job(site="TASK_Q"))])}
    )
    assert code == 200, reply
    panda_id = reply["data"][0][0]
    # reassign: not Bob's job; Jane's own, to a named queue.
    assert _post(strict, pki, bob, "job/reassign", {"job_ids": [panda_id], "site": "Q_B"})[1]["message"] == (
        "0 of 1 jobs reassigned"
    )
    code, reply = _post(strict, pki, pki.proxy, "job/reassign", {"job_ids": [panda_id], "site": "Q_B"})
    assert (code, reply["success"], reply["message"]) == (200, True, "1 of 1 jobs reassigned")
    code, reply = _post(strict, pki, pki.proxy, "job/get_description", {"job_ids": [panda_id]})
    assert reply["data"][0]["computingSite"] == "Q_B"
    # set_command: production only, as on the real server.
    code, reply = _post(strict, pki, pki.proxy, "job/set_command", {"job_id": panda_id, "command": "debug"})
    assert code == 403 and not reply["success"]
    code, reply = _post(strict, pki, boss, "job/set_command", {"job_id": panda_id, "command": "debug"})
    assert (code, reply["success"]) == (200, True), reply
    # The offline script: the job's owner reads it; plain HTTP is refused.
    code, reply = _get(strict, pki, pki.proxy, "job/generate_offline_execution_script", {"job_id": panda_id})
    assert code == 200 and reply["success"] and reply["data"]["script"].startswith("#!/bin/bash")
    assert "hello.sh echo hello --debug" in reply["data"]["script"]
    code, _ = _curl(
        f"{strict.base}/api/v1/job/generate_offline_execution_script?job_id={panda_id}", pki, None
    )
    assert code == 401
    audit = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit", "--job", str(panda_id)],
        env=strict.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "job/reassign" in audit.stdout and "job/set_command" in audit.stdout, audit.stdout
    assert "0 of 1 jobs reassigned" in audit.stdout and "CN=Bob Jones" in audit.stdout


def test_task_methods_owner_production_and_history(strict: Httpd, pki: Pki) -> None:
    boss = pki.add_user(BOSS_CN)
    code, reply = _post(strict, pki, pki.proxy, "task/submit", {"task_parameters": prun_params()})
    assert code == 200 and reply["success"], reply
    task_id = reply["data"]
    production_only = {
        "task/change_priority": {"task_id": task_id, "priority": 2000},
        "task/change_attribute": {"task_id": task_id, "attribute_name": "ramCount", "value": 3000},
        "task/change_split_rule": {"task_id": task_id, "attribute_name": "NF", "value": "2"},
        "task/change_modification_time": {"task_id": task_id, "hour_offset": -12},
        "task/reassign_global_share": {
            "task_id_list": [task_id],
            "share": "Express",
            "reassign_running_jobs": False,
        },
        "task/release": {"task_id": task_id},
        "task/avalanche": {"task_id": task_id},
        "task/enable_job_cloning": {"jedi_task_id": task_id, "mode": "runonce"},
        "task/disable_job_cloning": {"jedi_task_id": task_id},
        "task/enable_jumbo_jobs": {"task_id": task_id, "jumbo_jobs_total": 2},
    }
    for path, body in production_only.items():
        code, reply = _post(strict, pki, pki.proxy, path, body)
        assert code == 403 and not reply["success"], path
    answers = {path: _post(strict, pki, boss, path, body)[1] for path, body in production_only.items()}
    assert answers["task/change_priority"] == {"success": True, "message": "1 tasks changed", "data": None}
    assert all(a["success"] for a in answers.values()), answers
    assert "event service" in answers["task/enable_jumbo_jobs"]["message"]
    code, reply = _get(strict, pki, pki.proxy, "task/get_jumbo_job_datasets", {"from_offset": 1})
    assert reply["success"] and str(task_id) in reply["data"]
    code, _ = _curl(f"{strict.base}/api/v1/task/get_jumbo_job_datasets?from_offset=1", pki, None)
    assert code == 401
    # Another user may neither reassign the task nor kill its jobs.
    bob = pki.add_user("Bob Jones")
    code, reply = _post(strict, pki, bob, "task/reassign", {"task_id": task_id, "site": "Q_B"})
    assert (code, reply["success"], reply["data"]) == (200, False, 3)
    code, reply = _post(strict, pki, bob, "task/kill_unfinished_jobs", {"task_id": task_id})
    assert reply["data"] == [False, False, False]
    # The owner reassigns their own task (the real server lets them) and kills its jobs.
    code, reply = _post(
        strict, pki, pki.proxy, "task/reassign", {"task_id": task_id, "site": "Q_B", "mode": "nokill"}
    )
    assert (reply["success"], reply["data"]) == (True, 0), reply
    code, reply = _post(strict, pki, pki.proxy, "task/kill_unfinished_jobs", {"task_id": task_id})
    assert reply["success"] and reply["data"] == [True, True, True]
    assert _post(strict, pki, pki.proxy, "task/kill_unfinished_jobs", {"task_id": task_id})[1]["data"] == []
    # Everything is on the task's page in the monitor, with who did it.
    page = subprocess.run(
        ["curl", "-s", "--capath", str(pki.ca_dir), "--cert", str(pki.proxy), "--key", str(pki.proxy)]
        + [f"{strict.https}/monitor/task/{task_id}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "<h2>History</h2>" in page
    audit = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit", "--user", BOSS_CN],
        env=strict.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for path in production_only:
        assert path in audit, path
    assert f"jedi_task_id={task_id}" in audit and f"task_id_list={task_id}" in audit
    for needle in ("currentPriority", "ramCount", "splitRule", "gshare", "site", "Prod Boss", "Jane Doe"):
        assert needle in page, needle
