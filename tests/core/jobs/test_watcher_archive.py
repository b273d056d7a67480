"""Lost heartbeats and archiving, on every backend."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select, update

from pandawms.core.jobs import dispatch, heartbeat, kill, submit
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.archive import archive_final_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.jobs.watcher import fail_stale_jobs
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
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
    # lost heartbeat (100) and never picked up (102) are retried; a timeout in holding (103) is final
    assert counts == {"failed": 3, "cancelled": 1, "retried": 2}
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


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_the_daemon_runner_mid_batch_loses_nothing(db_url: str, make_runtime) -> None:  # noqa: ANN001
    """SIGKILL the long-running ``pandawms daemon`` while its archiver task works: the task process
    dies with it, every job is in exactly one table, and a new daemon finishes the work."""
    rt = make_runtime(db_url, archive_delay=0)
    total = 8000
    for _ in range(total // 4000):
        ids = [a[0] for a in submit.submit_jobs(rt, [make_job() for _ in range(4000)], WHO)]
        with rt.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.PandaID.in_(ids)).values(jobStatus="finished"))
    env = {
        **os.environ,
        "PANDA_DB_URL": db_url,
        "PANDA_ARCHIVE_DELAY": "0",
        "PANDA_DAEMON_TASKS": "archiver",
        "PANDA_DAEMON_PERIODS": "archiver=2",
    }

    def count() -> tuple[set[int], list[int]]:
        with read_tx(rt.engine) as conn:  # a reader must not queue for SQLite's write lock
            live = {r[0] for r in conn.execute(select(jobs.c.PandaID))}
            archived = [r[0] for r in conn.execute(select(jobs_archive.c.PandaID))]
        return live, archived

    runner = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and not workers:  # the archiver's task process
        workers = _children(runner.pid)
        time.sleep(0.01)
    while time.monotonic() < deadline and not count()[1]:  # wait until it has moved something
        time.sleep(0.005)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert workers, "the archiver was not running in a task process"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "the task process outlived its runner"
    live, archived = count()
    time.sleep(1)
    # an orphaned task process would have gone on archiving (a whole batch takes milliseconds)
    assert count()[0] == live, "jobs were archived after the daemon was killed"
    assert len(archived) == len(set(archived)), "a job archived twice"
    assert not live & set(archived), "a job in both tables"
    assert len(live) + len(archived) == total, "a job lost"
    # (a task process left running would have archived the rest within milliseconds)
    assert live, "no job left in the live table: the kill came too late, or the task went on after it"

    # a new daemon takes over once the dead one's lease has lapsed, and finishes the work
    again = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and count()[0]:
            time.sleep(0.2)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(30)
    live, archived = count()
    assert not live and sorted(archived) == sorted(set(archived)) and len(archived) == total
