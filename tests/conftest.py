"""Fixtures: databases on every backend, a Runtime, and the real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pandawms.config import load_settings
from pandawms.core.runtime import Runtime
from pandawms.db.schema import metadata
from pandawms.db.versioning import init_schema
from tests.dbs import BACKENDS

ALL_BACKENDS = ["sqlite", "postgresql", "mariadb"]

#: The servers the tests start (dozens at once, some of three nodes, against one PostgreSQL with
#: 100 sessions) open their connections on first use; tests/e2e/test_pool_preopen.py starts one
#: with the default, each worker's pool opened before it serves.
os.environ.setdefault("PANDA_DB_POOL_PREOPEN", "0")
_initialised: set[str] = set()


#: Set by .ci/run, where every program and server the tests need is installed: there a skipped
#: test means something real went untested, so the session fails (see pytest_sessionfinish).
REQUIRE_TOOLS = os.environ.get("PANDA_TEST_REQUIRE_TOOLS") == "1"
#: Skips CI accepts: a fact of this machine's OpenSSL, not a missing installation.
ALLOWED_SKIPS = ("this OpenSSL cannot make a TLS 1.1 client",)
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for backend in BACKENDS.values():
        try:
            backend.teardown()
        except Exception:  # noqa: BLE001 - cleanup must not hide the test result
            pass
    # In CI (.ci/run) every program and server the tests need is installed: a skip there means
    # something real went untested, so it fails the run instead of passing quietly.
    if REQUIRE_TOOLS and _skipped:
        print("\nPANDA_TEST_REQUIRE_TOOLS=1 and these tests were skipped:", file=sys.stderr)
        for line in _skipped:
            print("  " + line, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _fresh_url(name: str, tmp_path: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'pandawms.sqlite'}"
    return BACKENDS[name].require()


def _empty_tables(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name == "schema_version" or table.name == "alembic_version":
                continue
            conn.execute(table.delete())


@pytest.fixture(params=ALL_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with the pandawms schema and no rows, on each backend in turn."""
    url = _fresh_url(request.param, tmp_path)
    return url


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Build Runtimes on an emptied, initialised database; disposed at the end of the test."""
    made: list[Runtime] = []

    def build(url: str, **overrides: object) -> Runtime:
        settings = load_settings(None, {"db_url": url, "data_dir": str(tmp_path), **overrides})
        rt = Runtime.from_settings(settings)
        if url not in _initialised or url.startswith("sqlite"):
            init_schema(rt.engine)
            _initialised.add(url)
        _empty_tables(rt)
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.engine.dispose()


@pytest.fixture
def rt(db_url: str, make_runtime: Callable[..., Runtime]) -> Runtime:
    """A Runtime on an empty database, once per backend."""
    return make_runtime(db_url)


@pytest.fixture
def sqlite_rt(tmp_path: Path, make_runtime: Callable[..., Runtime]) -> Runtime:
    """A Runtime on SQLite only (for tests about the model, not the backends)."""
    return make_runtime(f"sqlite:///{tmp_path / 'only.sqlite'}")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening_sockets(port: int) -> set[str]:
    """``socket:[inode]`` of every socket listening on TCP ``port`` (from /proc/net)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port``."""
    sockets = _listening_sockets(port)
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if os.readlink(fd) in sockets:
                return True
        except OSError:
            continue
    return False


def _listener_elsewhere(port: int) -> bool:
    return bool(_listening_sockets(port))


class ServerProcess:
    """The real ``pandawms serve`` process on a loopback port."""

    def __init__(self, url: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.db_url = url
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A free port can be taken by another test process's server between the check and our
        # bind: then the answer to is_alive would be that server's. Only a port our process
        # listens on counts; another one is tried when it is someone else's.
        for _ in range(5):
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            if self._start(url, data_dir, env):
                return
        raise RuntimeError(f"no free port stayed free for the server:\n{self.log()}")

    def _start(self, url: str, data_dir: Path, env: dict[str, str] | None) -> bool:
        """Start the server on :attr:`port`; False when another process holds that port."""
        cmd = [
            sys.executable,
            "-m",
            "pandawms",
            "serve",
            "--port",
            str(self.port),
            "--db-url",
            url,
            "--data-dir",
            str(data_dir),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if _listener_elsewhere(self.port):
                    return False
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/api/v1/system/is_alive", timeout=1).status_code == 200:
                    if _listens(self.proc.pid, self.port):
                        return True
                    self.proc.kill()
                    self.proc.wait()
                    return False
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within 30 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_server(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> Iterator[Callable[..., ServerProcess]]:
    """Start real server processes on a given database URL (emptied first)."""
    servers: list[ServerProcess] = []

    def start(url: str, env: dict[str, str] | None = None) -> ServerProcess:
        make_runtime(url)  # initialise and empty the database
        data_dir = tmp_path / f"server{len(servers)}"
        data_dir.mkdir()
        server = ServerProcess(url, data_dir, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(db_url: str, start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The real server on each backend in turn."""
    return start_server(db_url)


@pytest.fixture
def sqlite_server(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The real server on SQLite."""
    return start_server(f"sqlite:///{tmp_path / 'server.sqlite'}")
