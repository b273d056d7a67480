"""The web monitor driven in a real headless Chromium, plus its JSON and its refusals over HTTP.

Jobs are made the way clients make them: submitted over /api/v1/job/submit, taken by a pilot
with /server/panda/getJob, and moved with /server/panda/updateJob. The browser tests need
Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them they
are skipped with the reason (CI installs them). Only 127.0.0.1 URLs are ever loaded.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.jobs import make_file, make_job, state_list

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
JSON = {"Accept": "application/json"}


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if not Path(CHROMEDRIVER).exists():
        return "chromedriver is not installed (apt-get install chromium-driver)"
    try:
        import PIL  # noqa: F401
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium and pillow packages are not installed (pip install selenium pillow)"
    return None


class Jobs:
    """A failed, a finished, a running and a waiting job on TEST_SITE, made over HTTP."""

    def __init__(self, server: ServerProcess) -> None:
        base = server.base
        jobs = [
            make_job(
                jediTaskID=4242,
                jobName="monitor-failing",
                files=[make_file("failing.out.root"), make_file("failing.log.tgz", "log")],
            ),
            make_job(jediTaskID=4242, jobName="monitor-finishing"),
            make_job(jediTaskID=4242, jobName="monitor-running"),
        ]
        reply = httpx.post(
            base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
        )
        ids = [answer[0] for answer in reply.json()["data"]]
        self.failed, self.finished, self.running = ids
        got = httpx.post(
            base + "/server/panda/getJob",
            headers=JSON,
            data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "nJobs": "3", "node": "wn1"},
        ).json()
        assert sorted(j["PandaID"] for j in got["jobs"]) == sorted(ids)
        update = base + "/server/panda/updateJob"
        for pid in ids:
            assert (
                httpx.post(update, headers=JSON, data={"jobId": pid, "state": "running"}).json()["StatusCode"]
                == 0
            )
        failed = httpx.post(
            update,
            headers=JSON,
            data={
                "jobId": self.failed,
                "state": "failed",
                "pilotErrorCode": "1305",
                "pilotErrorDiag": "Payload exited with code 7",
                "exeErrorCode": "7",
            },
        ).json()
        assert failed["StatusCode"] == 0
        assert (
            httpx.post(update, headers=JSON, data={"jobId": self.finished, "state": "finished"}).json()[
                "StatusCode"
            ]
            == 0
        )
        waiting = httpx.post(
            base + "/api/v1/job/submit",
            json={"jobs": json.dumps([state_list(make_job(jediTaskID=4343, jobName="monitor-waiting"))])},
        )
        self.waiting = waiting.json()["data"][0][0]


@pytest.fixture
def jobs(sqlite_server: ServerProcess) -> Jobs:
    return Jobs(sqlite_server)


# --- JSON and refusals (no browser needed; every backend) ---------------------------------


def test_json_behind_every_page(server: ServerProcess) -> None:
    made = Jobs(server)
    base = server.base + "/monitor/api"
    dash = httpx.get(base + "/dashboard", params={"hours": 1}).json()
    assert dash["summary"]["by_status"] == {"activated": 1, "running": 1, "finished": 1, "failed": 1}
    assert dash["summary"]["by_queue"]["TEST_SITE"]["failed"] == 1
    changes: dict[str, int] = {}
    for bucket in dash["timeline"]["buckets"]:
        for status, n in bucket["counts"].items():
            changes[status] = changes.get(status, 0) + n
    assert changes["activated"] == 4 and changes["sent"] == 3 and changes["running"] == 3
    assert changes["finished"] == 1 and changes["failed"] == 1
    assert dash["summary"]["at"].endswith("Z")
    # The same document from the page URL with ?format=json.
    same = httpx.get(server.base + "/monitor", params={"hours": 1, "format": "json"}).json()
    assert same["summary"]["by_status"] == dash["summary"]["by_status"]
    listed = httpx.get(base + "/jobs", params={"status": "failed", "queue": "TEST_SITE"}).json()
    assert [j["PandaID"] for j in listed["jobs"]] == [made.failed]
    assert listed["jobs"][0]["error"].startswith("pilot 1305: the payload failed")
    assert listed["total"] == 1 and listed["older"] is None
    page = httpx.get(base + "/jobs", params={"limit": 2}).json()
    assert [j["PandaID"] for j in page["jobs"]] == [made.waiting, made.running]
    older = httpx.get(server.base + page["older"]).json()
    assert [j["PandaID"] for j in older["jobs"]] == [made.finished, made.failed]
    newer = httpx.get(server.base + older["newer"]).json()
    assert [j["PandaID"] for j in newer["jobs"]] == [made.waiting, made.running]
    by_task = httpx.get(
        base + "/jobs", params={"task": 4242, "user": listed["jobs"][0]["prodUserName"]}
    ).json()
    assert len(by_task["jobs"]) == 3
    assert httpx.get(base + "/jobs", params={"hours": 1, "status": "running,failed"}).json()["jobs"]
    job = httpx.get(base + f"/job/{made.failed}").json()
    assert job["job"]["jobStatus"] == "failed" and job["error_summary"].startswith("pilot 1305")
    assert [h["jobStatus"] for h in job["history"]][:3] == ["activated", "sent", "running"]
    assert {f["lfn"] for f in job["files"]} == {"failing.out.root", "failing.log.tgz"}
    task = httpx.get(base + "/task/4242").json()
    assert task["total"] == 3 and task["counts"] == {"running": 1, "finished": 1, "failed": 1}
    queue = httpx.get(base + "/queue/TEST_SITE").json()
    assert queue["counts"]["activated"] == 1 and queue["last_heartbeat"] is not None
    assert [j["PandaID"] for j in queue["recent_failures"]] == [made.failed]
    why = httpx.get(base + f"/why/{made.waiting}").json()
    assert why["jobStatus"] == "activated" and why["verdict"]
    assert {t["task"] for t in httpx.get(base + "/daemon").json()["tasks"]} >= {"watcher", "archiver"}
    assert any(q["name"] == "TEST_SITE" for q in httpx.get(base + "/queues").json()["queues"])
    assert any(t["jediTaskID"] == 4242 for t in httpx.get(base + "/tasks").json()["tasks"])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/monitor/api/jobs?status=sleeping", "not a job status"),
        ("/monitor/api/jobs?limit=0", "limit must be between 1 and 500"),
        ("/monitor/api/jobs?task=abc", "task must be a whole number"),
        ("/monitor/api/jobs?queue=a%20b", "not a valid queue name"),
        ("/monitor/api/jobs?since=yesterday", "since must be an ISO date"),
        ("/monitor/api/jobs?hours=2&since=2024-01-01", "hours or since, not both"),
        ("/monitor/api/jobs?table=everything", "table must be live, archive or all"),
        ("/monitor/api/jobs?colour=red", "unknown parameter(s): colour"),
        ("/monitor/api/job/12x", "PandaID must be a positive whole number"),
        ("/monitor/api/dashboard?hours=1000", "hours must be between 1 and 72"),
        ("/monitor/jobs?format=xml", "format must be html or json"),
    ],
)
def test_bad_parameters_get_400(sqlite_server: ServerProcess, path: str, message: str) -> None:
    reply = httpx.get(sqlite_server.base + path)
    assert reply.status_code == 400
    assert message in reply.text


def test_missing_things_get_404_and_writes_405(sqlite_server: ServerProcess) -> None:
    base = sqlite_server.base
    assert httpx.get(base + "/monitor/api/job/987654").status_code == 404
    assert httpx.get(base + "/monitor/job/987654").status_code == 404
    assert httpx.get(base + "/monitor/api/task/987654").status_code == 404
    assert httpx.get(base + "/monitor/api/queue/NO_SUCH_QUEUE").status_code == 404
    assert httpx.get(base + "/monitor/nothing-here").status_code == 404
    assert httpx.get(base + "/monitor/static/../../etc/passwd").status_code == 404
    assert httpx.post(base + "/monitor/jobs").status_code == 405


def test_user_values_are_escaped(jobs: Jobs, sqlite_server: ServerProcess) -> None:
    evil = '<script>alert("x")</script>'
    reply = httpx.get(sqlite_server.base + "/monitor/jobs", params={"user": evil})
    assert reply.status_code == 200
    assert "<script>alert" not in reply.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in reply.text
    assert reply.headers["content-security-policy"].startswith("default-src 'self'")
    css = httpx.get(sqlite_server.base + "/monitor/static/monitor.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


# --- in the browser ------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)  # in CI (PANDA_TEST_REQUIRE_TOOLS=1) conftest turns any skip into a failure
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="pandawms-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


#: Fill colours of the chart's bars (monitor.css), as RGB.
STATUS_COLOURS = {
    "activated": (0x42, 0xA5, 0xF5),
    "sent": (0xAB, 0x47, 0xBC),
    "running": (0x66, 0xBB, 0x6A),
    "holding": (0xFF, 0xA7, 0x26),
    "finished": (0x2E, 0x7D, 0x32),
    "failed": (0xD3, 0x2F, 0x2F),
}


def _colours(png: Path) -> dict[tuple[int, int, int], int]:
    """Pixel counts by RGB colour of a screenshot: proof that the bars were drawn, not just the page."""
    from PIL import Image

    with Image.open(png) as image:
        counts = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    return {colour: n for n, colour in counts}


def _local(url: str) -> str:
    assert urllib.parse.urlparse(url).hostname == "127.0.0.1"
    return url


def test_dashboard_shows_chart_and_tables(
    browser: Any, jobs: Jobs, sqlite_server: ServerProcess, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(_local(sqlite_server.base + "/monitor?hours=1"))
    assert browser.title.startswith("Dashboard")
    chart = browser.find_element(By.ID, "timeline-chart")
    assert chart.size["height"] > 100 and chart.size["width"] > 400
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline-chart rect.bar")
    assert {b.get_attribute("data-status") for b in bars} >= {
        "activated",
        "sent",
        "running",
        "failed",
        "finished",
    }
    assert (
        sum(int(b.get_attribute("data-count")) for b in bars if b.get_attribute("data-status") == "failed")
        == 1
    )
    tiles = {
        t.find_element(By.CLASS_NAME, "l").text: int(t.find_element(By.CLASS_NAME, "n").text)
        for t in browser.find_elements(By.CSS_SELECTOR, "#status-tiles .tile")
    }
    assert tiles == {"activated": 1, "running": 1, "finished": 1, "failed": 1}
    rows = browser.find_elements(By.CSS_SELECTOR, "table.counts tbody tr")
    assert rows[0].find_element(By.TAG_NAME, "td").text == "TEST_SITE"
    assert rows[-1].find_element(By.TAG_NAME, "td").text == "total"
    _shot(browser, tmp_path, "dashboard")
    chart.screenshot(str(tmp_path / "chart.png"))
    drawn = _colours(tmp_path / "chart.png")
    for status, colour in STATUS_COLOURS.items():
        assert drawn.get(colour, 0) > 50, f"no {status} bar ({colour}) in the chart screenshot"
    # From the dashboard to the failed job, as a shifter would click.
    browser.find_element(By.CSS_SELECTOR, "#status-tiles a.st-failed").click()
    assert browser.title.startswith("Jobs")
    link = browser.find_element(By.CSS_SELECTOR, "table.jobs tbody tr td a")
    assert link.text == str(jobs.failed)
    assert "pilot 1305" in browser.find_element(By.CSS_SELECTOR, "table.jobs tbody tr .err").text
    _shot(browser, tmp_path, "jobs-failed")
    link.click()
    assert browser.title.startswith(f"Job {jobs.failed}")


def test_failed_job_page_says_why(
    browser: Any, jobs: Jobs, sqlite_server: ServerProcess, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(_local(f"{sqlite_server.base}/monitor/job/{jobs.failed}"))
    reason = browser.find_element(By.ID, "failure-reason").text
    assert reason.startswith("Why it failed: pilot 1305: the payload failed")
    assert "Payload exited with code 7" in reason
    errors = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "table.errors tbody tr")
    ]
    assert errors[0][:2] == ["pilot", "1305"] and errors[1][:2] == ["exe", "7"]
    history = [
        tr.find_elements(By.TAG_NAME, "td")[2].text
        for tr in browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")
    ]
    assert history == ["activated", "sent", "running", "holding", "failed"]
    assert {
        tr.find_element(By.TAG_NAME, "td").text
        for tr in browser.find_elements(By.CSS_SELECTOR, "table.files tbody tr")
    } == {
        "failing.out.root",
        "failing.log.tgz",
    }
    _shot(browser, tmp_path, "job-failed")
    json_href = browser.find_element(By.ID, "json-link").get_attribute("href")
    assert httpx.get(_local(json_href)).json()["PandaID"] == jobs.failed


def test_task_queue_daemon_and_waiting_job_pages(
    browser: Any, jobs: Jobs, sqlite_server: ServerProcess, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base = sqlite_server.base
    browser.get(_local(f"{base}/monitor/task/4242"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Task 4242"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".hbar span")) >= 3
    assert "33.3%" in browser.find_element(By.CSS_SELECTOR, "table.key").text
    _shot(browser, tmp_path, "task")
    browser.get(_local(f"{base}/monitor/queue/TEST_SITE"))
    key = browser.find_element(By.CSS_SELECTOR, "table.key").text
    assert "last heartbeat seen" in key and "ago" in key
    assert browser.find_element(By.CSS_SELECTOR, "table.jobs tbody tr td a").text == str(jobs.failed)
    _shot(browser, tmp_path, "queue")
    browser.get(_local(f"{base}/monitor/daemon"))
    tasks = [
        tr.find_element(By.TAG_NAME, "b").text
        for tr in browser.find_elements(By.CSS_SELECTOR, "table.daemon tbody tr")
    ]
    assert "watcher" in tasks and "archiver" in tasks
    _shot(browser, tmp_path, "daemon")
    browser.get(_local(f"{base}/monitor/job/{jobs.waiting}"))
    assert browser.find_element(By.CSS_SELECTOR, "#why .verdict").text
    _shot(browser, tmp_path, "job-waiting")
    browser.get(_local(f"{base}/monitor/jobs?user=%3Cscript%3Ealert(1)%3C/script%3E"))
    assert browser.find_element(By.NAME, "user").get_attribute("value") == "<script>alert(1)</script>"
    assert browser.find_element(By.ID, "no-jobs").text == "No jobs match."
    browser.get(_local(f"{base}/monitor/jobs?status=sleeping"))
    assert "not a job status" in browser.find_element(By.ID, "error-message").text
