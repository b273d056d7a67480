"""Lost heartbeats and archiving, on every backend."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select, update

from pandawms.core import dispatch, heartbeat, jobs_read, kill, submit
from pandawms.core.archive import archive_final_jobs
from pandawms.core.heartbeat import PilotUpdate
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.watcher import fail_stale_jobs
from pandawms.db.schema import jobs, jobs_archive
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

WHO = Identity(dn="/CN=Tester")


def _age(rt: Runtime, panda_id: int, seconds: int) -> None:
    with rt.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.PandaID == panda_id)
            .values(modificationTime=utcnow() - dt.timedelta(seconds=seconds))
        )


def test_watcher_fails_silent_jobs_with_the_right_code(rt: Runtime) -> None:
    ids = [
        a[0] for a in submit.submit_jobs(rt, [make_job(files=[make_file("o.root")]) for _ in range(5)], WHO)
    ]
    dispatch.acquire_jobs(rt, dispatch.DispatchRequest("TEST_SITE", n_jobs=5, prod_source_label="user"), WHO)
    sent, running, holding, fresh, killed = ids
    for pid in (running, fresh, killed):
        heartbeat.update_job(rt, PilotUpdate(pid, "running", 0))
    heartbeat.update_job(rt, PilotUpdate(holding, "holding", 0))
    kill.kill_jobs(rt, [killed], WHO)
    _age(rt, sent, 2000)
    _age(rt, running, 8000)
    _age(rt, holding, 200000)
    _age(rt, killed, 8000)
    _age(rt, fresh, 60)
    counts = fail_stale_jobs(rt)
    assert counts == {"failed": 3, "cancelled": 1, "retried": 3}
    found = {j["PandaID"]: j for j in jobs_read.get_descriptions(rt, ids, include_archive=True) if j}
    assert found[sent]["jobDispatcherErrorCode"] == 102
    assert found[running]["jobDispatcherErrorCode"] == 100
    assert found[running]["jobDispatcherErrorDiag"].startswith("lost heartbeat : ")
    assert found[holding]["jobDispatcherErrorCode"] == 103
    assert found[killed]["jobStatus"] == "cancelled"
    assert found[fresh]["jobStatus"] == "running"
    assert found[running]["Files"][0]["status"] == "failed"
    # the pilot that comes back late is told to stop
    assert heartbeat.update_job(rt, PilotUpdate(running, "running", 0)).command == "tobekilled"
    assert fail_stale_jobs(rt) == {}


def test_archiver_moves_only_old_final_jobs(rt: Runtime) -> None:
    ids = [a[0] for a in submit.submit_jobs(rt, [make_job() for _ in range(3)], WHO)]
    kill.kill_jobs(rt, ids[:2], WHO)
    _age(rt, ids[0], 7200)
    assert archive_final_jobs(rt) == 1
    assert jobs_read.get_descriptions(rt, [ids[0]], include_archive=False) == [None]
    archived = jobs_read.get_descriptions(rt, [ids[0]], include_archive=True)[0]
    assert archived is not None and archived["jobStatus"] == "cancelled"
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(jobs_archive)).scalar_one() == 1


def test_archiving_survives_a_kill(db_url: str, make_runtime) -> None:  # noqa: ANN001
    rt = make_runtime(db_url, archive_delay=0)
    total = 12000
    for _ in range(total // 4000):
        ids = [a[0] for a in submit.submit_jobs(rt, [make_job() for _ in range(4000)], WHO)]
        with rt.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.PandaID.in_(ids)).values(jobStatus="finished"))
    env = {**os.environ, "PANDA_DB_URL": db_url, "PANDA_ARCHIVE_DELAY": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "daemon", "--once", "archiver"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it has moved something, then kill it mid-way
        with rt.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(jobs_archive)).scalar_one() > 0:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with rt.engine.connect() as conn:
        live = {r[0] for r in conn.execute(select(jobs.c.PandaID))}
        archived = [r[0] for r in conn.execute(select(jobs_archive.c.PandaID))]
    assert len(archived) == len(set(archived)), "a job archived twice"
    assert not live & set(archived), "a job in both tables"
    assert len(live) + len(archived) == total, "a job lost"
    assert archive_final_jobs(rt) == len(live)  # the next run finishes the work
