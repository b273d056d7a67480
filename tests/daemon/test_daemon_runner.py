"""The daemon runner: periods, fleet-wide leases across processes, time limits, failures."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from pandawms.config import load_settings
from pandawms.core.runtime import Runtime
from pandawms.daemon.catalog import TASKS
from pandawms.daemon.registry import PeriodicSet
from pandawms.daemon.runner import Runner, describe, enabled_tasks
from pandawms.db.schema import daemon_runs
from pandawms.model.errors import PandaError

#: Test-only tasks, added to the daemon's table below (the runner forks, so its children see them).
periodic = PeriodicSet()


@periodic.task("t_tick", period=2)
def _tick(rt: Runtime) -> str:
    """Test task: quick."""
    return "tick"


@periodic.task("t_hang", period=1)
def _hang(rt: Runtime) -> str:
    """Test task: overruns its limit."""
    time.sleep(60)
    return "never"


@periodic.task("t_boom", period=1, fleet_wide=False)
def _boom(rt: Runtime) -> str:
    """Test task: fails."""
    raise RuntimeError("boom")


@periodic.task("t_slow", period=1)
def _slow(rt: Runtime) -> str:
    """Test task: runs longer than its period (but within its limit)."""
    time.sleep(1.8)
    return "slow"


def _run_daemons(url: str, names: str, seconds: float, count: int = 1) -> None:
    settings = load_settings(None, {"db_url": url, "daemon_tasks": names})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=lambda: os._exit(Runner(settings).run())) for _ in range(count)]
    for proc in procs:
        proc.start()
    time.sleep(seconds)
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0


def _runs(rt: Runtime, name: str) -> list[dict]:
    with rt.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(daemon_runs).where(daemon_runs.c.task == name).order_by(daemon_runs.c.started)
            ).mappings()
        ]


TASKS.update({t.name: t for t in periodic.tasks})


def test_fleet_wide_task_runs_once_per_period_across_two_daemons(db_url: str, make_runtime: Callable) -> None:
    rt = make_runtime(db_url)
    _run_daemons(db_url, "t_tick", 7.2, count=2)
    runs = _runs(rt, "t_tick")
    assert 3 <= len(runs) <= 5, runs
    # the SIGTERM that ends the daemons may stop the last run on a busy machine
    assert all(r["outcome"] == "ok" and r["message"] == "tick" for r in runs[:-1]), runs
    assert runs[-1]["outcome"] in ("ok", "stopped"), runs
    gaps = [(b["started"] - a["started"]).total_seconds() for a, b in zip(runs, runs[1:], strict=False)]
    assert min(gaps) >= 1.5, f"two runs within one period: {gaps}"


def test_overrun_is_killed_and_a_failure_does_not_stop_others(db_url: str, make_runtime: Callable) -> None:
    rt = make_runtime(db_url)
    _run_daemons(db_url, "t_hang,t_boom,t_tick", 7.0)  # the hang (limit 3 s) must be cut before the stop
    hang = _runs(rt, "t_hang")
    assert hang[0]["outcome"] == "timeout" and "limit 3s" in hang[0]["message"]
    boom = _runs(rt, "t_boom")
    assert len(boom) >= 3 and all(
        r["outcome"] == "failed" and "RuntimeError: boom" in r["message"] for r in boom
    )
    assert [r["outcome"] for r in _runs(rt, "t_tick")][:2] == ["ok", "ok"]
    listed = {
        row["task"]: row
        for row in describe(load_settings(None, {"db_url": db_url, "daemon_tasks": "t_tick"}))
    }
    # the SIGTERM that ends the daemons may stop the last run
    last = _runs(rt, "t_tick")[-1]["outcome"]
    assert listed["t_tick"]["last_outcome"] == last in ("ok", "stopped") and listed["t_tick"]["period"] == 2


def test_task_configuration_is_checked() -> None:
    assert [
        t.name
        for t in enabled_tasks(
            load_settings(None, {"daemon_tasks": "watcher", "daemon_periods": "watcher=5"})
        )
    ] == ["watcher"]
    assert (
        enabled_tasks(load_settings(None, {"daemon_tasks": "watcher", "daemon_periods": "watcher=5"}))[
            0
        ].period
        == 5
    )
    with pytest.raises(PandaError, match="unknown task"):
        enabled_tasks(load_settings(None, {"daemon_tasks": "nope"}))
    with pytest.raises(PandaError, match="whole seconds"):
        enabled_tasks(load_settings(None, {"daemon_periods": "watcher=soon"}))
    assert {"watcher", "archiver"} <= set(TASKS)


def test_a_run_longer_than_its_period_keeps_the_lease(db_url: str, make_runtime: Callable) -> None:
    """Two daemons; the task outlasts its 1 s period: runs follow each other and never overlap."""
    rt = make_runtime(db_url)
    _run_daemons(db_url, "t_slow", 6.5, count=2)
    runs = _runs(rt, "t_slow")
    # the last run may be cut short by the SIGTERM that ends the test
    summary = [(r["started"], r["finished"], r["outcome"], r["message"]) for r in runs]
    assert len(runs) >= 2 and all(r["outcome"] == "ok" for r in runs[:-1]), summary
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["started"] >= before["finished"], f"two runs at once: {before} and {after}"
