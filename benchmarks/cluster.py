"""A multi-node pandawms on one machine: N ``pandawms httpd`` nodes, M daemons, one HAProxy.

Each node is a separate ``pandawms httpd`` process group on its own loopback port, all on one
shared database; HAProxy balances them and health-checks ``/health``. :meth:`Cluster.kill_node`
SIGKILLs a node's whole process group (master and workers), which is what a crashed machine
looks like to the balancer and the database.

Used by ``benchmarks/scaleout.py`` and ``tests/e2e/test_scale_out.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_binary() -> str | None:
    """The haproxy executable, or None when it is not installed."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None
    )


def haproxy_config(listen_port: int, backends: list[tuple[str, int]]) -> str:
    """The balancer as deployed (:func:`pandawms.deploy.haproxy.render_haproxy`), plain HTTP on
    loopback, /health checked every 500 ms so a dead node leaves the pool within about a second.

    Falls back to a minimal equivalent when the deploy package lacks the renderer.
    """
    try:
        from pandawms.deploy.haproxy import render_haproxy
    except ImportError:  # pragma: no cover - the deploy package is written alongside
        pass
    else:
        return render_haproxy(
            backends,
            listen_port=listen_port,
            https_port=None,
            bind_address="127.0.0.1",
            check_interval_ms=500,
            maxconn=4000,  # within the FD limit of an unprivileged process
        )
    servers = "\n".join(
        f"    server node{i} {host}:{port} check" for i, (host, port) in enumerate(backends, start=1)
    )
    return f"""global
    maxconn 8192
    log stderr format short local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 75s
    retries 3
    option redispatch

frontend panda
    bind 127.0.0.1:{listen_port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
{servers}
"""


@dataclass
class Node:
    """One ``pandawms httpd`` (a process group)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    """Nodes, daemons and the balancer; use as a context manager."""

    db_url: str
    work: Path
    n_nodes: int = 3
    n_daemons: int = 2
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    init_schema: bool = True
    nodes: list[Node] = field(default_factory=list)
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        """The balancer's address: what pilots and clients talk to."""
        return f"http://127.0.0.1:{self.port}"

    def _env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "PANDA_DB_URL": self.db_url,
            "PANDA_DATA_DIR": str(self.work / name),
            "PANDA_LOG_DIR": str(self.work / name / "log"),
            "PANDA_WORKERS": str(self.workers),
            "PANDA_NODE_NAME": name,
            **self.env,
        }

    def _spawn(
        self, name: str, args: list[str], extra: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        (self.work / name / "log").mkdir(parents=True, exist_ok=True)
        log = self.work / name / "stderr.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pandawms", *args],
                env={**self._env(name), **extra},
                stdout=subprocess.DEVNULL,
                stderr=out,
                start_new_session=True,  # its own process group, so a kill takes the workers too
            )
        return proc, log

    def start(self) -> Cluster:
        """Start everything and wait until the balancer sees every node healthy."""
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy is not installed")
        self.work.mkdir(parents=True, exist_ok=True)
        if self.init_schema:
            subprocess.run(
                [sys.executable, "-m", "pandawms", "db", "init"],
                env=self._env("init"),
                check=True,
                capture_output=True,
            )
        for i in range(1, self.n_nodes + 1):
            port = free_port()
            proc, log = self._spawn(f"node{i}", ["httpd"], {"PANDA_PORT": str(port)})
            self.nodes.append(Node(f"node{i}", port, proc, log))
        for i in range(1, self.n_daemons + 1):
            proc, _ = self._spawn(f"daemon{i}", ["daemon"], {})
            self.daemons.append(proc)
        self.port = free_port()
        config = self.work / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, [("127.0.0.1", n.port) for n in self.nodes]))
        with open(self.work / "haproxy.log", "wb") as out:
            self.haproxy = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        for node in self.nodes:
            self._wait_healthy(f"http://127.0.0.1:{node.port}/health", node, deadline)
        self._wait_healthy(self.url + "/health", None, deadline)
        time.sleep(1.5)  # HAProxy marks servers up after `rise` checks
        return self

    def _wait_healthy(self, url: str, node: Node | None, deadline: float) -> None:
        while time.monotonic() < deadline:
            if node is not None and not node.alive:
                raise RuntimeError(f"{node.name} exited: {node.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback only
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not become healthy")

    def kill_node(self, index: int, freeze: float = 0.0) -> None:
        """SIGKILL a node's whole process group: a crash, no draining, no goodbye.

        With ``freeze`` the node is first stopped (SIGSTOP) for that many seconds, a hang before
        the crash: requests already sent to it are then surely in flight when it dies.
        """
        node = self.nodes[index]
        try:
            if freeze > 0:
                os.killpg(node.proc.pid, signal.SIGSTOP)
                time.sleep(freeze)
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(10)

    def pids(self) -> list[int]:
        """Process ids of the live nodes and daemons (for RSS sampling)."""
        return [n.proc.pid for n in self.nodes if n.alive] + [d.pid for d in self.daemons if d.poll() is None]

    def stop(self) -> None:
        """Stop everything that is still running (each process group we started, by its id)."""
        procs = [n.proc for n in self.nodes] + self.daemons
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self.haproxy is not None:
            try:
                self.haproxy.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(5)

    def __enter__(self) -> Cluster:
        # __exit__ does not run when __enter__ raises: a node that never became healthy must not
        # leave the others (and the daemons) running after the test.
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
