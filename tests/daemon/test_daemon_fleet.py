"""The daemon as operators run it: real ``pandawms daemon`` and ``pandawms serve`` processes.

Two daemons on one database share the fleet-wide tasks (each runs once per period, whichever
node takes the lease), queue definitions flow from the configured source to brokerage, and a
pilot that falls silent has its job failed on time, with PanDA's code and message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs import submit
from pandawms.core.runtime import Runtime
from pandawms.db.schema import daemon_leases, daemon_runs, jobs
from pandawms.model.identity import Identity
from tests.conftest import ServerProcess
from tests.jobs import make_job

WHO = Identity(dn="/CN=Fleet Tester")
QUEUES = {
    "FLEET_SCORE": {"status": "online", "type": "unified", "corecount": 1, "maxrss": 4000, "maxtime": 86400},
    "FLEET_MCORE": {
        "status": "online",
        "type": "production",
        "corecount": 8,
        "maxrss": 32000,
        "maxtime": 86400,
    },
}
PERIOD = 2


def _start_daemon(url: str, node: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pandawms", "daemon", "--db-url", url],
        env={**os.environ, **env, "PANDA_NODE_NAME": node},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_daemons_run_each_task_once_per_period_and_broker_jobs(
    db_url: str, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    rt = make_runtime(db_url)
    # jobs submitted before any queue exists wait in "defined" for brokerage
    big, small = (
        a[0]
        for a in submit.submit_jobs(
            rt,
            [
                make_job(site=None, prodSourceLabel="managed", coreCount=8, minRamCount=16000),
                make_job(site=None, prodSourceLabel="user"),
            ],
            WHO,
        )
    )
    source = tmp_path / "schedconfig.json"
    source.write_text(json.dumps(QUEUES))
    tasks = ("configurator", "brokerage", "watcher")
    env = {
        "PANDA_DAEMON_TASKS": ",".join(tasks),
        "PANDA_DAEMON_PERIODS": ",".join(f"{t}={PERIOD}" for t in tasks),
        "PANDA_QUEUES_SOURCE": str(source),
    }
    procs = [_start_daemon(db_url, f"node-{n}", env, tmp_path / f"daemon{n}.log") for n in "ab"]
    try:
        # from the first run of every task (start-up takes a while on a busy machine), 7 s more
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with rt.engine.connect() as conn:
                if len({r[0] for r in conn.execute(select(daemon_runs.c.task))}) == len(tasks):
                    break
            time.sleep(0.2)
        time.sleep(7)
        assert all(p.poll() is None for p in procs), [(tmp_path / f"daemon{n}.log").read_text() for n in "ab"]
    finally:
        _stop(procs)
    assert [p.returncode for p in procs] == [0, 0]

    with rt.engine.connect() as conn:
        runs = [dict(r) for r in conn.execute(select(daemon_runs).order_by(daemon_runs.c.id)).mappings()]
        leases = {r["task"]: r["owner"] for r in conn.execute(select(daemon_leases)).mappings()}
    for name in tasks:
        mine = sorted((r for r in runs if r["task"] == name), key=lambda r: r["started"])
        assert 3 <= len(mine) <= 6, (name, mine)
        # the SIGTERM that ends the test may stop the last run
        assert all(r["outcome"] == "ok" for r in mine[:-1]) and mine[-1]["outcome"] in ("ok", "stopped"), mine
        starts = [r["started"] for r in mine]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        assert min(gaps) >= PERIOD - 0.5, f"{name} ran twice within one period: {gaps}"
        assert {r["node"] for r in mine} <= {"node-a", "node-b"}
        assert leases[name].split(":")[0] in ("node-a", "node-b")
    # the queues came from the configured source, and brokerage placed the waiting jobs
    configured = [r for r in runs if r["task"] == "configurator"]
    assert configured[0]["message"].startswith("2 queues: 2 new")
    found = {
        j["PandaID"]: j for j in jobs_read.get_descriptions(rt, [big, small], include_archive=False) if j
    }
    assert (found[big]["jobStatus"], found[big]["computingSite"]) == ("activated", "FLEET_MCORE")
    assert (found[small]["jobStatus"], found[small]["computingSite"]) == ("activated", "FLEET_SCORE")


def _legacy(server: ServerProcess, method: str, **form: Any) -> dict[str, Any]:
    reply = httpx.post(
        f"{server.base}/server/panda/{method}",
        data={k: str(v) for k, v in form.items()},
        headers={"Accept": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


@pytest.mark.slow
def test_a_silent_pilot_has_its_job_failed_on_time(
    start_server: Callable[..., ServerProcess], make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'watch.sqlite'}"
    limit = 10
    server = start_server(
        url,
        {
            "PANDA_TIMEOUT_RUNNING": str(limit),
            "PANDA_DAEMON_TASKS": "watcher",
            "PANDA_DAEMON_PERIODS": "watcher=1",
        },
    )
    rt = make_runtime(url)
    silent, alive = (a[0] for a in submit.submit_jobs(rt, [make_job(), make_job()], WHO))
    for _ in range(2):
        got = _legacy(server, "getJob", siteName="TEST_SITE", prodSourceLabel="user", node="wn1")
        assert got["StatusCode"] == 0
    for panda_id in (silent, alive):
        assert _legacy(server, "updateJob", jobId=panda_id, state="running", attemptNr=0)["command"] == "NULL"
    with rt.engine.connect() as conn:
        last_beat = conn.execute(select(jobs.c.modificationTime).where(jobs.c.PandaID == silent)).scalar_one()
    beat_clock = time.monotonic()
    failed_after = None
    while time.monotonic() - beat_clock < limit + 15:
        time.sleep(0.5)
        assert _legacy(server, "updateJob", jobId=alive, state="running", attemptNr=0)["command"] == "NULL"
        if jobs_read.get_statuses(rt, [silent])[silent]["jobStatus"] == "failed":
            failed_after = time.monotonic() - beat_clock
            break
    assert failed_after is not None, "the watcher never failed the silent job:\n" + server.log()[-3000:]
    # not before the limit, and within the limit plus one watcher period (and some slack)
    assert limit - 0.5 <= failed_after <= limit + 1 + 3, failed_after
    job = jobs_read.get_descriptions(rt, [silent], include_archive=True)[0]
    assert job is not None
    assert job["jobDispatcherErrorCode"] == 100
    assert job["jobDispatcherErrorDiag"] == f"lost heartbeat : {last_beat:%Y-%m-%d %H:%M:%S}"
    assert abs(job["endTime"] - last_beat) < dt.timedelta(seconds=1)
    assert jobs_read.get_statuses(rt, [alive])[alive]["jobStatus"] == "running"
    # the pilot that comes back is told to stop
    assert _legacy(server, "updateJob", jobId=silent, state="running", attemptNr=0)["command"] == "tobekilled"
