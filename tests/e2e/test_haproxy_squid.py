"""The rendered balancer and cache configs with the real haproxy and squid, on loopback only.

Two real ``pandawms httpd`` nodes behind a real haproxy: traffic reaches both, a drained node
leaves the pool and comes back, forged DN headers are dropped, grid proxies pass through to the
nodes and a terminated client certificate arrives as the trusted DN header. A real squid in
front of a node answers the second GET of a queue file from its cache while POSTs pass through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pandawms.deploy.haproxy import render_haproxy
from pandawms.deploy.squid import render_squid
from tests.certs import USER_DN, Pki, make_pki
from tests.conftest import free_port
from tests.e2e.httpd_proc import Httpd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Program:
    """A foreground program started by the test and always stopped by it (by its own pid)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._out.close()


@pytest.fixture
def nodes(tmp_path: Path, pki: Pki) -> Iterator[list[Httpd]]:
    """Two httpd nodes (one worker each) that trust DN headers from 127.0.0.1, the balancer."""
    started: list[Httpd] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(Httpd(tmp_path / name, pki, workers=1, trusted_proxies="127.0.0.1"))
        yield started
    finally:
        for node in started:
            node.stop()


@contextlib.contextmanager
def _haproxy(cfg: str, tmp_path: Path, port: int) -> Iterator[_Program]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    program = _Program(["haproxy", "-db", "-f", str(path)], tmp_path / "haproxy.out")
    try:
        _wait(lambda: _port_open(port) or program.proc.poll() is not None, 15, "haproxy to listen")
        assert program.proc.poll() is None, program.output()
        yield program
    finally:
        program.stop()


def _served_by(client: httpx.Client, url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        reply = client.get(url, headers={"Connection": "close"})
        assert reply.status_code == 200, reply.text
        seen[reply.headers["x-pandawms-node"]] += 1
    return seen


def _stats(sock_path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _op_states(sock_path: Path, backend: str = "panda_http_nodes") -> dict[str, int]:
    """Server name -> operational state in a pool (0 down, 2 up) from the admin socket."""
    states = {}
    for line in _stats(sock_path, f"show servers state {backend}").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == backend:
            states[fields[3]] = int(fields[5])
    return states


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_balances_drains_and_passes_proxies_through(
    tmp_path: Path, nodes: list[Httpd], pki: Pki
) -> None:
    http_port, https_port = free_port(), free_port()
    admin = tmp_path / "haproxy.sock"
    cfg = render_haproxy(
        [(("127.0.0.1", n.port, n.https_port)) for n in nodes],
        http_port,
        https_port,
        bind_address="127.0.0.1",
        check_interval_ms=300,
        fall=2,
        rise=2,
        stats_socket=str(admin),
        maxconn=1000,  # the default 20000 needs a file limit above this container's
    )
    with _haproxy(cfg, tmp_path, http_port) as haproxy, httpx.Client(timeout=10) as client:
        base = f"http://127.0.0.1:{http_port}"
        _wait(lambda: _op_states(admin) == {"node1": 2, "node2": 2}, 20, "both nodes up")
        _wait(
            lambda: _op_states(admin, "panda_https_nodes") == {"node1": 2, "node2": 2}, 20, "both up (HTTPS)"
        )
        seen = _served_by(client, base + "/api/v1/system/is_alive", 20)
        assert set(seen) == {"node1", "node2"}, seen

        # A DN header sent by a client never reaches the nodes, although they trust the balancer.
        forged = client.get(
            base + "/api/v1/system/get_attributes", headers={"X-SSL-Client-S-DN": "/CN=Forged Admin"}
        ).json()
        assert forged["data"]["environment"]["SSL_CLIENT_S_DN"] is None

        # HTTPS passes through: the node itself verifies the RFC 3820 proxy.
        curl = subprocess.run(
            ["curl", "-s", "--capath", str(pki.ca_dir), "--cert", str(pki.proxy), "--key", str(pki.proxy)]
            + ["--resolve", f"localhost:{https_port}:127.0.0.1"]
            + [f"https://localhost:{https_port}/api/v1/system/get_attributes"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        env = httpx.Response(200, content=curl.stdout.encode()).json()["data"]["environment"]
        assert env["SSL_CLIENT_S_DN"] == USER_DN and env["PANDA_AUTH_METHOD"] == "x509"

        # Drain node a: its /health answers 503, haproxy takes it out of both pools.
        nodes[0].drain.touch()
        assert httpx.get(nodes[0].base + "/health").status_code == 503
        _wait(lambda: _op_states(admin).get("node1") == 0, 15, "haproxy to mark the drained node down")
        assert _served_by(client, base + "/api/v1/system/is_alive", 20) == Counter({"node2": 20})
        # the HTTPS pool checks the same /health on its own schedule
        _wait(lambda: _op_states(admin, "panda_https_nodes") == {"node1": 0, "node2": 2}, 15, "HTTPS pool")

        # Back in the pool once the drain file is gone.
        nodes[0].drain.unlink()
        _wait(lambda: _op_states(admin).get("node1") == 2, 15, "the node to come back")
        _wait(lambda: _op_states(admin, "panda_https_nodes").get("node1") == 2, 15, "its HTTPS to come back")
        assert set(_served_by(client, base + "/api/v1/system/is_alive", 20)) == {"node1", "node2"}
        assert haproxy.proc.poll() is None


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_terminating_tls_passes_the_verified_dn(tmp_path: Path, nodes: list[Httpd], pki: Pki) -> None:
    http_port, https_port = free_port(), free_port()
    pem = tmp_path / "host-and-key.pem"
    pem.write_bytes(pki.host_cert.read_bytes() + pki.host_key.read_bytes())
    cfg = render_haproxy(
        [("127.0.0.1", n.port) for n in nodes],
        http_port,
        https_port,
        bind_address="127.0.0.1",
        tls_mode="terminate",
        tls_pem=str(pem),
        tls_ca_file=str(pki.ca_dir / "pandawms-test-ca.pem"),
        check_interval_ms=300,
        maxconn=1000,
    )
    with _haproxy(cfg, tmp_path, http_port):
        url = f"https://localhost:{https_port}/api/v1/system/get_attributes"

        def attributes(*cert: str) -> dict[str, object]:
            out = subprocess.run(
                ["curl", "-s", "--capath", str(pki.ca_dir), *cert]
                + [
                    "--resolve",
                    f"localhost:{https_port}:127.0.0.1",
                    "-H",
                    "X-SSL-Client-S-DN: /CN=Forged",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.returncode == 0, out.stderr
            return httpx.Response(200, content=out.stdout.encode()).json()["data"]["environment"]

        _wait(lambda: _port_open(https_port), 10, "the HTTPS frontend")
        env: dict[str, object] = {}
        for _ in range(50):  # the nodes may still be coming up in haproxy's view
            env = attributes("--cert", str(pki.user_cert), "--key", str(pki.user_key))
            if env:
                break
            time.sleep(0.2)
        assert env["SSL_CLIENT_S_DN"] == USER_DN and env["PANDA_AUTH_METHOD"] == "header"
        # no client certificate: anonymous, and the forged header was dropped
        assert attributes()["SSL_CLIENT_S_DN"] is None


@pytest.fixture
def squid_dir() -> Iterator[Path]:
    """Squid's own pid, logs and cache spool: a fresh directory, never /var/spool/squid.

    Started as root, squid switches to its unprivileged user, so the directory must be open to
    it (pytest's tmp_path is not).
    """
    path = Path(tempfile.mkdtemp(prefix="pandawms-squid-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(shutil.which("squid") is None, reason="squid is not installed")
def test_squid_caches_queue_files_and_passes_posts(tmp_path: Path, pki: Pki, squid_dir: Path) -> None:
    node = Httpd(tmp_path, pki, workers=1, trusted_proxies="127.0.0.1")
    program: _Program | None = None
    try:
        queues = tmp_path / "queues.json"
        queues.write_text('{"SQUID_QUEUE": {"status": "online", "corecount": 1}}')
        loaded = subprocess.run(
            [sys.executable, "-m", "pandawms", "queues", "load", str(queues)],
            env=node.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert loaded.returncode == 0, loaded.stderr
        port = free_port()
        conf = squid_dir / "squid.conf"
        conf.write_text(
            render_squid(
                [("127.0.0.1", node.port)],
                port,
                bind_address="127.0.0.1",
                log_dir=str(squid_dir),
                pid_file=str(squid_dir / "squid.pid"),
                shutdown_seconds=1,
            )
        )
        parse = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True, timeout=30)
        assert parse.returncode == 0, parse.stderr
        # -N: in the foreground, no daemon that could outlive the test; stopped by its pid below
        program = _Program(["squid", "-N", "-f", str(conf)], tmp_path / "squid.out")
        _wait(lambda: _port_open(port) or program.proc.poll() is not None, 30, "squid to listen")
        assert program.proc.poll() is None, program.output()

        base = f"http://127.0.0.1:{port}"
        url = base + "/cache/schedconfig/SQUID_QUEUE.all.json"
        with httpx.Client(timeout=10) as client:
            first = client.get(url)
            second = client.get(url)
            assert first.status_code == second.status_code == 200
            assert first.json()["corecount"] == 1 and second.content == first.content
            assert first.headers["x-cache"].startswith("MISS")
            assert second.headers["x-cache"].startswith("HIT"), second.headers
            assert second.headers["etag"] == first.headers["etag"]

            posts = [
                client.post(
                    base + "/server/panda/getJob",
                    data={"siteName": "SQUID_QUEUE", "prodSourceLabel": "user", "node": "wn1"},
                    headers={"Accept": "application/json"},
                )
                for _ in range(2)
            ]
            for reply in posts:
                assert reply.status_code == 200 and "StatusCode" in reply.json()
                assert reply.headers["x-cache"].startswith("MISS")

            # a client's DN header is not passed on, though the node trusts squid's address
            forged = client.get(
                base + "/api/v1/system/get_attributes", headers={"X-SSL-Client-S-DN": "/CN=Forged Admin"}
            ).json()
            assert forged["data"]["environment"]["SSL_CLIENT_S_DN"] is None

        access = node.log_dir / "panda-httpd-access.log"
        _wait(lambda: access.exists() and "getJob" in access.read_text(), 10, "the node's access log")
        lines = access.read_text().splitlines()
        assert sum("/cache/schedconfig/SQUID_QUEUE.all.json" in line for line in lines) == 1, lines
        assert sum("POST /server/panda/getJob" in line for line in lines) == 2, lines
    finally:
        if program is not None:
            program.stop()
        node.stop()
    squid_log = (squid_dir / "access.log").read_text()
    assert "TCP_MEM_HIT/200" in squid_log or "TCP_HIT/200" in squid_log, squid_log
    assert not os.path.exists(squid_dir / "squid.pid") or program.proc.returncode is not None
