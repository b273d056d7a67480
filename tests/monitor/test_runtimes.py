"""Two apps on two databases in one process: each has its own metrics and its own monitor answers.

The metrics registry is the runtime's, bound when the app is made and handed to the /metrics
page; nothing looks for the app on the call stack, so a count made from anywhere lands in the
runtime it was made for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pandawms.api.app import PandaApp, create_app
from pandawms.config import load_settings
from pandawms.core.runtime import Runtime
from pandawms.db.versioning import init_schema
from pandawms.monitor.metrics import registry_of
from pandawms.monitor.queries.daemon import daemon_run_totals
from pandawms.monitor.queries.timeline import closed_buckets
from tests.jobs import make_job, state_list


def _app(tmp_path: Path, name: str) -> PandaApp:
    settings = load_settings(
        None, {"db_url": f"sqlite:///{tmp_path / name}.sqlite", "data_dir": str(tmp_path / name)}
    )
    rt = Runtime.from_settings(settings)
    init_schema(rt.engine)
    return create_app(rt)


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[PandaApp, PandaApp]]:
    a, b = _app(tmp_path, "a"), _app(tmp_path, "b")
    yield a, b
    a.rt.engine.dispose()
    b.rt.engine.dispose()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_two_apps_count_and_answer_apart(apps: tuple[PandaApp, PandaApp], tmp_path: Path) -> None:
    a, b = apps
    assert a.metrics is registry_of(a.rt) and b.metrics is registry_of(b.rt)
    assert a.metrics is not b.metrics
    client_a, client_b = TestClient(a), TestClient(b)
    for _ in range(3):
        assert client_a.get("/api/v1/system/is_alive").status_code == 200
    assert client_b.get("/api/v1/system/is_alive").status_code == 200
    jobs = [state_list(make_job(jobName=f"rt-{i}")) for i in range(2)]
    assert client_a.post("/api/v1/job/submit", json={"jobs": json.dumps(jobs)}).json()["success"]

    text_a, text_b = client_a.get("/metrics").text, client_b.get("/metrics").text
    alive = {"method": "v1/system/is_alive", "status": "200"}
    assert _metric(text_a, "pandawms_http_requests_total", **alive) == 3
    assert _metric(text_b, "pandawms_http_requests_total", **alive) == 1
    assert _metric(text_a, "pandawms_jobs", status="activated", queue="TEST_SITE") == 2
    assert _metric(text_b, "pandawms_jobs", status="activated") == 0
    # each registry writes its own file under its own data directory
    for name in ("a", "b"):
        files = list((tmp_path / name / "metrics").glob(f"{os.getpid()}-*.metrics"))
        assert len(files) == 1, files

    dash_a, dash_b = client_a.get("/monitor/api").json(), client_b.get("/monitor/api").json()
    assert dash_a["summary"]["total"] == 2 and dash_b["summary"]["total"] == 0
    assert closed_buckets(a.rt) is not closed_buckets(b.rt)
    assert daemon_run_totals(a.rt) == daemon_run_totals(b.rt) == {}
    for kind in ("monitor.metrics", "monitor.summary", "monitor.daemon_totals", "monitor.daemon_run_counts"):
        assert kind in a.rt.cache.kinds() and kind in b.rt.cache.kinds()


def test_a_count_made_outside_a_request_lands_in_its_runtime(apps: tuple[PandaApp, PandaApp]) -> None:
    a, b = apps
    registry_of(a.rt).record("v1/job/submit", 200, 0.02)  # no app on the call stack
    counters_a, _, _ = registry_of(a.rt).collect()
    counters_b, _, _ = registry_of(b.rt).collect()
    assert counters_a.get("req\tv1/job/submit\t200") == 1
    assert "req\tv1/job/submit\t200" not in counters_b


def test_two_runtimes_on_one_data_directory_keep_separate_files(tmp_path: Path) -> None:
    settings = load_settings(
        None, {"db_url": f"sqlite:///{tmp_path / 'one'}.sqlite", "data_dir": str(tmp_path)}
    )
    first, second = Runtime.from_settings(settings), Runtime.from_settings(settings)
    try:
        registry_of(first).record("health", 200, 0.001)
        registry_of(second).record("health", 200, 0.001)
        registry_of(second).record("health", 200, 0.001)
        files = sorted((tmp_path / "metrics").glob(f"{os.getpid()}-*.metrics"))
        assert len(files) == 2  # one mapped file each: neither overwrites the other's counts
        # a scrape sums every live process's files of the directory: 3 requests in all
        assert registry_of(first).collect()[0]["req\thealth\t200"] == 3
    finally:
        first.engine.dispose()
        second.engine.dispose()
