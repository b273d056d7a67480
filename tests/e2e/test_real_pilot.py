"""The real PanDA pilot 3.7.0.36 fetches, runs and reports a job against pandawms.

The queue definition comes from pandawms' schedconfig cache, loaded with the server's own
queue loader; the pilot runs in its own PID namespace with PILOT_NOKILL (see
:mod:`tests.e2e.realpilot`). The verdict is the server's view of the job: the state history
the pilot's updates produced, the accepted output report and the files it recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from pandawms.db.schema import files, job_output_reports, job_status_log
from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.jobs import make_file, make_job, state_list

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "LOCAL_PILOT"


@pytest.fixture(autouse=True)
def _pilot_available() -> None:
    reason = realpilot.unavailable_reason()
    if reason is not None:
        if os.environ.get("PANDAWMS_REQUIRE_PILOT") == "1":  # CI: a pilot that cannot run is a failure
            pytest.fail(reason)
        pytest.skip(reason)


def _submit(base: str, *jobs: dict) -> list[int]:
    reply = httpx.post(
        base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}, timeout=30
    ).json()
    assert reply["success"], reply
    return [a[0] for a in reply["data"]]


def _hello_job(name: str) -> dict:
    out = make_file(
        f"{name}.out", "output", scope="user.tester", destinationDBlockToken=f"dst:{realpilot.LOCAL_ENDPOINT}"
    )
    log = make_file(
        f"{name}.log.tgz",
        "log",
        scope="user.tester",
        destinationDBlockToken=f"dst:{realpilot.LOCAL_ENDPOINT}",
    )
    return make_job(
        site=QUEUE,
        files=[out, log],
        jobName=name,
        transformation=realpilot.trf_url("hello.sh"),
        jobParameters=f"{name}.out",
    )


def test_real_pilot_runs_a_job_to_finished(server: ServerProcess, tmp_path: Path) -> None:
    """On each backend: the pilot's own calls take the job from activated to finished."""
    # timefloor 0: one job per pilot, so the pilot ends right after its final update.
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE, timefloor=0)})
    queuedata = httpx.get(f"{server.base}/cache/schedconfig/{QUEUE}.all.json").json()
    assert queuedata["state"] == "ACTIVE" and queuedata["copytools"] == {"mv": {}}
    (pid,) = _submit(server.base, _hello_job("hello"))
    trf = tmp_path / "trf"
    realpilot.write_payload(trf, "hello.sh", 'echo "hello from pandawms" | tee "$1"')

    result = realpilot.run_pilot(
        server.base, QUEUE, tmp_path / "pilots", timeout=240, max_jobs=1, trf_dir=trf
    )

    logs = result.logs() + "\n==== server\n" + server.log()[-5000:]
    status = httpx.get(server.base + "/api/v1/job/get_status", params={"job_ids": pid}).json()
    assert status["data"][0]["status"] == "finished", logs
    assert result.job_ids == [pid], logs
    assert result.exit_code == 0, logs

    engine = create_engine(server.db_url)
    with engine.connect() as conn:
        history = [
            r.jobStatus
            for r in conn.execute(
                select(job_status_log.c.jobStatus)
                .where(job_status_log.c.PandaID == pid)
                .order_by(job_status_log.c.id)
            )
        ]
        report = (
            conn.execute(select(job_output_reports).where(job_output_reports.c.PandaID == pid))
            .mappings()
            .one()
        )
        recorded = {
            r["lfn"]: dict(r) for r in conn.execute(select(files).where(files.c.PandaID == pid)).mappings()
        }
    engine.dispose()
    # The pilot's own updates drove the job: starting and running heartbeats, then the final report.
    assert history[-5:] == ["sent", "starting", "running", "holding", "finished"], (history, logs)
    assert report["jobStatus"] == "finished"
    sent = json.loads(report["data"])
    assert set(sent) == {"hello.out", "hello.log.tgz"}, report["data"]
    for lfn in ("hello.out", "hello.log.tgz"):
        assert recorded[lfn]["status"] == "ready", recorded[lfn]
        assert recorded[lfn]["fsize"] > 0 and recorded[lfn]["checksum"].startswith("ad:"), recorded[lfn]
    described = httpx.post(server.base + "/api/v1/job/get_description", json={"job_ids": [pid]}).json()
    job = described["data"][0]
    assert job["transExitCode"] == "0" and job["pilotErrorCode"] in (0, None), job
    assert job["pilotID"] and "3.7.0.36" in job["pilotID"], job["pilotID"]
    # The payload really ran: the "transferred" output holds what it wrote.
    moved = list((tmp_path / "pilots").rglob("hello.out"))
    assert any(p.read_text().strip() == "hello from pandawms" for p in moved), moved


def test_one_pilot_runs_three_jobs_on_a_timefloor_queue(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    """The pilot's multi-job loop: three getJob/updateJob rounds, then the "no jobs" reply ends it."""
    server = sqlite_server
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE, timefloor=10)})
    ids = _submit(server.base, *[_hello_job(f"multi{i}") for i in range(3)])
    trf = tmp_path / "trf"
    realpilot.write_payload(trf, "hello.sh", 'echo "hello from pandawms" | tee "$1"')

    result = realpilot.run_pilot(
        server.base, QUEUE, tmp_path / "pilots", timeout=300, max_jobs=3, trf_dir=trf
    )

    logs = result.logs() + "\n==== server\n" + server.log()[-5000:]
    statuses = httpx.get(
        server.base + "/api/v1/job/get_status", params={"job_ids": ",".join(map(str, ids))}
    ).json()["data"]
    assert [s["status"] for s in statuses] == ["finished"] * 3, logs
    assert sorted(result.job_ids) == sorted(ids) and len(result.runs) == 1, logs
    assert result.runs[0].drained and result.exit_code == 0, logs
