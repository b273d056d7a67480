"""/metrics of a real multi-worker ``pandawms httpd``, read with Prometheus's own text parser.

A scrape reaches one worker; the counters must still cover every worker's requests, the job
gauges must match the database, and the daemon's runs must show up with their outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.certs import make_pki
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list


@pytest.fixture
def httpd(tmp_path: Path) -> Iterator[Httpd]:
    server = Httpd(tmp_path, make_pki(tmp_path / "pki"), workers=2)
    yield server
    server.stop()


def _scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    reply = httpx.get(base + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items()))


def test_metrics_cover_every_worker_jobs_and_daemon(httpd: Httpd) -> None:
    for _ in range(40):  # a new connection each time, so both workers answer some
        assert httpx.get(httpd.base + "/api/v1/system/is_alive").status_code == 200
    for _ in range(3):
        assert httpx.get(httpd.base + "/api/v1/nosuch/method").status_code == 404
    jobs = [state_list(make_job(jobName=f"metrics-{i}")) for i in range(3)]
    reply = httpx.post(httpd.base + "/api/v1/job/submit", json={"jobs": json.dumps(jobs)})
    assert reply.json()["success"], reply.text
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "daemon"],
        env={**httpd.env, "PANDA_DAEMON_TASKS": "watcher", "PANDA_DAEMON_PERIODS": "watcher=1"},
        stdout=open(httpd.log_dir / "daemon-stdout.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        # Database-derived metrics are cached per worker for a few seconds: scrape until one shows the run.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = _scrape(httpd.base)
            if _value(seen, "pandawms_daemon_task_runs_total", task="watcher", outcome="ok") >= 1:
                break
            time.sleep(0.5)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)

    samples = _scrape(httpd.base)
    assert _value(samples, "pandawms_metrics_processes") >= 2
    alive = _value(samples, "pandawms_http_requests_total", method="v1/system/is_alive", status="200")
    assert alive >= 40  # the READY probe may add some
    assert _value(samples, "pandawms_http_requests_total", method="v1/unknown", status="404") == 3
    assert (
        _value(samples, "pandawms_http_request_duration_seconds_count", method="v1/system/is_alive") == alive
    )
    inf = _value(
        samples, "pandawms_http_request_duration_seconds_bucket", method="v1/system/is_alive", le="+Inf"
    )
    assert inf == alive
    assert _value(samples, "pandawms_jobs", status="activated", queue="TEST_SITE") == 3
    daemon_log = (httpd.log_dir / "panda-daemon.log").read_text(errors="replace")[-2000:]
    assert _value(seen, "pandawms_daemon_task_runs_total", task="watcher", outcome="ok") >= 1, daemon_log
    assert _value(seen, "pandawms_daemon_task_last_run_ok", task="watcher") == 1
    assert _value(seen, "pandawms_daemon_task_failures_total", task="watcher") == 0
    assert _value(samples, "pandawms_db_pool_size") >= 1
    assert _value(samples, "pandawms_db_up") == 1
