"""The newest PanDA pilot (3.11, from its source tarball) against pandawms, unchanged.

As ``--pilot-user generic``: three pilots at once take three jobs; one payload finishes, one
exits non-zero (``failed`` with the pilot's codes, not retried: no retry rule calls that
recoverable), one sleeps until a kill reaches its pilot through the heartbeat reply
(``cancelled``). As ``--pilot-user atlas``: the pilot first posts its worker node (stored, no
120 s penalty) and runs a production-style payload to ``finished``. The pilots run with
PILOT_NOKILL in their own PID namespaces, every external URL closed (:mod:`tests.e2e.realpilot`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from pandawms.db.schema import files, job_status_log, jobs
from pandawms.db.schema_nodes import worker_node, worker_node_queue
from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.jobs import make_file, make_job, state_list

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "LOCAL_PILOT311"
ENDPOINT_TOKEN = f"dst:{realpilot.LOCAL_ENDPOINT}"
PAYLOAD = """case "$1" in
  ok) echo "hello from pandawms" | tee "$2" ;;
  fail) echo "the payload fails on purpose" >&2; exit 3 ;;
  sleep) echo "sleeping until killed"; sleep 600 ;;
esac"""


@pytest.fixture(autouse=True)
def _pilot_available() -> None:
    reason = realpilot.unavailable_reason_311()
    if reason is not None:
        if os.environ.get("PANDAWMS_REQUIRE_PILOT") == "1":  # CI: a pilot that cannot run is a failure
            pytest.fail(reason)
        pytest.skip(reason)


def _submit(base: str, *jobs_: dict) -> list[int]:
    reply = httpx.post(
        base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs_])}, timeout=30
    ).json()
    assert reply["success"], reply
    return [a[0] for a in reply["data"]]


def _job(name: str, mode: str, **attrs: Any) -> dict:
    outs = [make_file(f"{name}.log.tgz", "log", destinationDBlockToken=ENDPOINT_TOKEN)]
    if mode == "ok":
        outs.insert(0, make_file(f"{name}.out", "output", destinationDBlockToken=ENDPOINT_TOKEN))
    attrs.setdefault("transformation", realpilot.trf_url("payload.sh", "3.11"))
    return make_job(
        site=QUEUE,
        files=outs,
        jobName=name,
        jobParameters=f"{mode} {name}.out",
        destinationDBlock=f"user.tester.{name}",
        **attrs,
    )


def _describe(base: str, ids: list[int]) -> list[dict]:
    reply = httpx.post(base + "/api/v1/job/get_description", json={"job_ids": ids}, timeout=30).json()
    return list(reply["data"])


def _history(db_url: str, panda_id: int) -> list[dict]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(job_status_log)
                    .where(job_status_log.c.PandaID == panda_id)
                    .order_by(job_status_log.c.id)
                ).mappings()
            ]
    finally:
        engine.dispose()


def _wait_running(base: str, panda_id: int, deadline: float) -> str:
    status = "?"
    while time.monotonic() < deadline:
        status = _describe(base, [panda_id])[0]["jobStatus"]
        if status == "running" or status in ("finished", "failed", "cancelled"):
            return status
        time.sleep(2)
    return status


def test_pilot311_generic_finishes_fails_and_is_killed(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    """Three generic pilots at once: finished, failed without retry, and killed while running."""
    server = sqlite_server
    realpilot.load_queues(server.db_url, {QUEUE: realpilot.queue_definition(QUEUE, timefloor=0)})
    ok_id, fail_id, sleep_id = _submit(
        server.base, _job("ok311", "ok"), _job("fail311", "fail"), _job("sleep311", "sleep")
    )
    # At submission every log file got its GUID and scope (the pilot names its log tarball's
    # GUID after it), prodUserID and resource_type are set.
    engine = create_engine(server.db_url)
    with engine.connect() as conn:
        logs = {
            r.PandaID: r
            for r in conn.execute(
                select(files.c.PandaID, files.c.GUID, files.c.scope).where(files.c.type == "log")
            )
        }
        submitted = {
            r.PandaID: r
            for r in conn.execute(select(jobs.c.PandaID, jobs.c.prodUserID, jobs.c.resource_type))
        }
    engine.dispose()
    for pid in (ok_id, fail_id, sleep_id):
        assert logs[pid].GUID and len(logs[pid].GUID) == 36 and logs[pid].GUID == logs[pid].GUID.lower()
        assert logs[pid].scope == "user.test"
        assert submitted[pid].prodUserID and submitted[pid].resource_type == "SCORE"
    trf = tmp_path / "trf"
    realpilot.write_payload(trf, "payload.sh", PAYLOAD)

    def one(n: int) -> realpilot.PilotRun:
        return realpilot.run_one_pilot(
            server.base, QUEUE, tmp_path / f"pilot-{n}", 420, trf_dir=trf, version="3.11", heartbeat=20
        )

    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(one, n) for n in range(3)]
        status = _wait_running(server.base, sleep_id, time.monotonic() + 300)
        assert status == "running", status
        killed = httpx.post(server.base + "/api/v1/job/kill", json={"job_ids": [sleep_id]}, timeout=30).json()
        assert killed["data"] == [True], killed
        results = [r.result() for r in runs]

    logs_text = "\n".join(
        f"==== {p}\n{p.read_text(errors='replace')[-15000:]}"
        for r in results
        for p in (r.log_path, r.stdout_path)
        if p.is_file()
    )
    logs_text += "\n==== server\n" + server.log()[-5000:]
    assert sorted(pid for r in results for pid in r.job_ids) == sorted([ok_id, fail_id, sleep_id]), logs_text
    ok, failed, cancelled = _describe(server.base, [ok_id, fail_id, sleep_id])
    assert ok["jobStatus"] == "finished", logs_text
    assert "3.11.5.1" in ok["pilotID"]
    # The payload's non-zero exit is final: the pilot's codes are kept, and no retry follows.
    assert failed["jobStatus"] == "failed", logs_text
    assert failed["transExitCode"] == "3" or failed["exeErrorCode"] == 3 or failed["pilotErrorCode"], failed
    assert failed["taskBufferErrorCode"] in (0, None), failed
    engine = create_engine(server.db_url)
    with engine.connect() as conn:
        children = conn.execute(select(jobs.c.PandaID).where(jobs.c.parentID == fail_id)).all()
    engine.dispose()
    assert children == []
    reasons = [h["reason"] or "" for h in _history(server.db_url, fail_id)]
    assert any("final, not retried" in r for r in reasons), reasons
    # The kill reached the running pilot through its heartbeat reply; it stopped the payload.
    assert cancelled["jobStatus"] == "cancelled", logs_text
    assert cancelled["taskBufferErrorCode"] == 100 or cancelled["pilotErrorCode"] == 1144, cancelled
    history = [h["jobStatus"] for h in _history(server.db_url, sleep_id)]
    assert "running" in history and history[-1] == "cancelled", history


def test_pilot311_atlas_reports_its_node_and_runs_without_waiting(
    sqlite_server: ServerProcess, tmp_path: Path
) -> None:
    """The ATLAS pilot's worker-node map is stored, and its first getJob follows at once."""
    server = sqlite_server
    realpilot.load_queues(
        server.db_url, {QUEUE: realpilot.queue_definition(QUEUE, timefloor=0, atlas_site="LOCAL_SITE")}
    )
    trf = tmp_path / "trf"
    trf.mkdir()
    script = trf / "hello.py"
    script.write_text(
        "import json, sys\n"
        "open(sys.argv[1], 'w').write('hello from pandawms')\n"
        "json.dump({'exitCode': 0, 'exitMsg': 'OK'}, open('jobReport.json', 'w'))\n"
    )
    # A production-style job: the ATLAS plugin runs "python <transformation> <jobPars>" for a
    # job without swRelease (user jobs would download their transformation from the web).
    out = make_file("atlas311.out", "output", destinationDBlockToken=ENDPOINT_TOKEN)
    log = make_file("atlas311.log.tgz", "log", destinationDBlockToken=ENDPOINT_TOKEN)
    (pid,) = _submit(
        server.base,
        make_job(
            site=QUEUE,
            files=[out, log],
            jobName="atlas311",
            prodSourceLabel="managed",
            transformation=str(script),
            jobParameters="atlas311.out",
            destinationDBlock="mc.test.atlas311",
        ),
    )

    run = realpilot.run_one_pilot(
        server.base,
        QUEUE,
        tmp_path / "pilot",
        360,
        job_label="managed",
        trf_dir=trf,
        version="3.11",
        pilot_user="atlas",
        extra_env=realpilot.atlas_site_env(tmp_path),
    )

    logs = ""
    for path in (run.log_path, run.stdout_path):
        if path.is_file():
            logs += f"==== {path}\n{path.read_text(errors='replace')[-20000:]}\n"
    logs += "==== server\n" + server.log()[-5000:]
    (job,) = _describe(server.base, [pid])
    assert job["jobStatus"] == "finished", logs
    assert run.job_ids == [pid], logs
    full = run.stdout_path.read_text(errors="replace")
    assert "api/v1/pilot/update_worker_node" in full and "Inserted new worker node." in full, logs
    engine = create_engine(server.db_url)
    with engine.connect() as conn:
        nodes = [dict(r) for r in conn.execute(select(worker_node)).mappings()]
        links = [dict(r) for r in conn.execute(select(worker_node_queue)).mappings()]
    engine.dispose()
    assert len(nodes) == 1, nodes
    node = nodes[0]
    assert node["site"] == "LOCAL_SITE" and node["cpu_model"] and node["n_logical_cpus"] >= 1, node
    assert node["total_memory"] > 0 and node["cpu_architecture"], node
    assert [(lk["panda_queue"], lk["host_name"]) for lk in links] == [(QUEUE, node["host_name"])]
    # No 120 s penalty: the job was handed out soon after the pilot started.
    sent = next(h for h in _history(server.db_url, pid) if h["jobStatus"] == "sent")
    started = dt.datetime.fromtimestamp(run.started_at, dt.UTC).replace(tzinfo=None)
    gap = (sent["modificationTime"] - started).total_seconds()
    assert gap < 90, (gap, logs)
    # The monitor's queue page lists the node.
    page = httpx.get(f"{server.base}/monitor/queue/{QUEUE}", timeout=30)
    assert page.status_code == 200 and node["host_name"] in page.text, page.text[:2000]
