"""Three httpd nodes and two daemons behind a real HAProxy on one PostgreSQL; one node dies.

The short version of ``benchmarks/scaleout.py``: a few hundred jobs, pilots talking only to the
balancer, node 1 hangs for a second and is SIGKILLed (its whole process group) once 30 % of the
jobs are out. Every job must be dispatched to one pilot only, every submitted job must end
finished (itself, or through the retry the watcher makes when a dispatch reply died with the
node), every acknowledged update must be in the database, and the surviving nodes must carry on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from benchmarks.cluster import Cluster, free_port, haproxy_binary
from benchmarks.scaleout import CLUSTER_ENV, drive

from pandawms.core.runtime import Runtime
from tests.dbs import BACKENDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_three_nodes_behind_haproxy_survive_a_killed_node(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    """Exactly-once dispatch, nothing lost, and the rest picks up after node 1 is killed."""
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    url = BACKENDS["postgresql"].require()
    make_runtime(url)  # schema in place, tables empty
    args = argparse.Namespace(
        jobs=300, pilots=24, heartbeats=1, batch=150, kill_at=0.3, freeze=1.0, duration=75
    )
    with Cluster(
        url, tmp_path / "cluster", n_nodes=3, n_daemons=2, env=dict(CLUSTER_ENV), init_schema=False
    ) as cl:
        result = asyncio.run(drive(cl, args))
        assert not cl.nodes[0].alive and all(node.alive for node in cl.nodes[1:])
    assert result["problems"] == [], result
    assert result["submitted"] == 300
    assert result["dispatched_after_kill"] > 0, result
    served = result["balancer"]["requests_per_node"]
    assert served.get("node2", 0) > 0 and served.get("node3", 0) > 0, served
    assert any("node1 is DOWN" in event for event in result["balancer_events"]), result["balancer_events"]


def test_workers_stop_when_their_master_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the httpd master alone takes the node's workers down too (no orphan serving)."""
    port = free_port()
    env = {
        **os.environ,
        "PANDA_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "PANDA_DATA_DIR": str(tmp_path),
        "PANDA_PORT": str(port),
        "PANDA_WORKERS": "2",
    }
    subprocess.run([sys.executable, "-m", "pandawms", "db", "init"], env=env, check=True, capture_output=True)
    master = subprocess.Popen(
        [sys.executable, "-m", "pandawms", "httpd"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "httpd did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        master.kill()
        master.wait(10)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.ConnectError:
                return
            time.sleep(0.2)
        raise AssertionError("the workers still answer after their master was killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
