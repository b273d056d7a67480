"""``pandawms httpd`` as systemd runs it: workers, HTTPS with grid proxies, status line, logs, drain."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.certs import USER_DN, Pki, make_pki
from tests.e2e.clients import client_env, run_client
from tests.e2e.httpd_proc import Httpd


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def httpd(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    server = Httpd(tmp_path, pki)
    yield server
    server.stop()


def test_status_line_counts_requests_across_workers(httpd: Httpd) -> None:
    with httpx.Client() as client:
        for _ in range(30):
            assert (
                client.get(
                    httpd.base + "/api/v1/system/is_alive", headers={"Connection": "close"}
                ).status_code
                == 200
            )
    line = httpd.wait_for(lambda m: m.startswith("STATUS=Total requests: 30;"), 10)
    assert "Idle/Busy workers 80/0" in line  # 2 workers x 40 threads, nothing in flight
    assert "Requests/sec:" in line and "Bytes served/sec:" in line


def test_https_with_a_grid_proxy_reaches_the_handlers(httpd: Httpd, pki: Pki) -> None:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "--capath",
            str(pki.ca_dir),
            "--cert",
            str(pki.proxy),
            "--key",
            str(pki.proxy),
            httpd.https + "/api/v1/system/get_attributes",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    env = httpx.Response(200, content=out.stdout).json()["data"]["environment"]
    assert env["SSL_CLIENT_S_DN"] == USER_DN and env["HTTPS"] == "on"
    plain = httpx.get(httpd.base + "/api/v1/system/get_attributes").json()["data"]["environment"]
    assert plain["SSL_CLIENT_S_DN"] is None and plain["HTTPS"] == "off"
    refused = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", httpd.https + "/health"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.stdout in ("000", ""), "a client that does not trust the test CA must not connect"


def test_panda_client_over_https_with_proxy(httpd: Httpd, pki: Pki, tmp_path: Path) -> None:
    env = client_env(httpd.https, tmp_path / "cfg")
    env.update(X509_USER_PROXY=str(pki.proxy), X509_CERT_DIR=str(pki.ca_dir))
    script = (
        "import json\nfrom pandaclient import Client, JobSpec\n"
        "j = JobSpec.JobSpec(); j.jobDefinitionID = 1; j.jobName = 'tls'; j.transformation = 'hello.sh'\n"
        "j.prodSourceLabel = 'user'; j.computingSite = 'Q'; j.jobParameters = 'x'\n"
        "s, out = Client.submitJobs([j])\n"
        "s2, jobs = Client.getJobStatus([out[0][0]])\n"
        "print('RESULT:' + json.dumps([s, s2, jobs[0].prodUserName, jobs[0].prodUserID, Client.get_cert_attributes()]))\n"
    )
    status, status2, name, owner, attrs = run_client(script, env)
    assert (status, status2, name, owner) == (0, 0, "Jane Doe", USER_DN)
    assert attrs == [0, {"GRST_CRED_0": f"X509USER 0 0 0 {USER_DN}"}]


def test_sighup_reopens_logs_without_losing_a_line(httpd: Httpd) -> None:
    access = httpd.log_dir / "panda-httpd-access.log"
    with httpx.Client() as client:
        for _ in range(20):
            client.get(httpd.base + "/api/v1/system/is_alive")
        access.rename(access.with_suffix(".log.1"))
        httpd.proc.send_signal(signal.SIGHUP)
        for _ in range(20):
            client.get(httpd.base + "/api/v1/system/is_alive")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (access.exists() and access.read_text().strip()):
            client.get(httpd.base + "/api/v1/system/is_alive")
            time.sleep(0.2)
    time.sleep(0.5)
    lines = access.with_suffix(".log.1").read_text().splitlines() + access.read_text().splitlines()
    served = [line for line in lines if "/api/v1/system/is_alive" in line]
    assert len(served) >= 40
    assert access.exists() and access.read_text().strip(), "new requests must go to the reopened file"
    assert "log files reopened" in (httpd.log_dir / "panda-httpd.log").read_text()


def test_drain_file_takes_the_node_out_of_the_balancer(httpd: Httpd) -> None:
    assert httpx.get(httpd.base + "/health").status_code == 200
    httpd.drain.write_text("maintenance\n")
    reply = httpx.get(httpd.base + "/health")
    assert reply.status_code == 503 and reply.text == "draining\n"
    assert httpx.get(httpd.base + "/api/v1/system/is_alive").status_code == 200  # still serving
    httpd.drain.unlink()
    assert httpx.get(httpd.base + "/health").status_code == 200


def test_a_killed_worker_is_replaced(httpd: Httpd) -> None:
    children = subprocess.run(
        ["pgrep", "-P", str(httpd.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = subprocess.run(
            ["pgrep", "-P", str(httpd.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        if len(now) == 2 and children[0] not in now:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the killed worker was not replaced")
    for _ in range(10):
        assert httpx.get(httpd.base + "/api/v1/system/is_alive").status_code == 200
