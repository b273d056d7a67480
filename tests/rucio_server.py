"""A real Rucio server for tests: its own virtualenv, its own PostgreSQL database, loopback only.

Rucio's server package (PyPI ``rucio``) pins its dependencies tightly (SQLAlchemy, Flask...),
so it lives in a virtualenv of its own, built once and cached under ``~/.cache/pandawms``
(``PANDAWMS_CACHE`` moves it). Each test session then:

1. creates a PostgreSQL database with a unique name on 127.0.0.1:5432 (dropped at the end);
2. writes ``rucio.cfg`` (database, bootstrap identity, client section pointing at the server);
3. bootstraps the schema and the root account with Rucio's own ``tools/bootstrap.py``;
4. serves the REST API (the Flask application) with gunicorn on a free loopback port;
5. creates, through the REST API as root, a service account with a userpass identity, scopes,
   POSIX RSEs (``file`` scheme, prefix a temporary directory; one of them tape), distances
   between them and quotas.

Without PostgreSQL, or when the package cannot be installed, the fixture skips with the
reason (CI turns skips into failures). The first build downloads and installs the package and
is bounded by :data:`INSTALL_TIMEOUT`; later sessions start in seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

RUCIO_VERSION = "41.5.1"
#: Seconds the first build of the server virtualenv may take (a slow network, a loaded machine).
INSTALL_TIMEOUT = 1200
#: Seconds the bootstrap and the server's first answer may take.
START_TIMEOUT = 180
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"

ACCOUNT = "pandawms"
SCOPES = ("user.pandawms", "user.jdoe", "panda", "tests")
#: RSEs every session gets: two disks and a tape, with distances between all of them.
RSES = (
    ("PANDAWMS_DISK_A", "DISK", {"istape": False, "site": "SITE_A", "tier": 1}),
    ("PANDAWMS_DISK_B", "DISK", {"istape": False, "site": "SITE_B", "tier": 2}),
    ("PANDAWMS_TAPE", "TAPE", {"istape": True, "site": "SITE_A", "tier": 1}),
)


class RucioUnavailable(RuntimeError):
    """Why no Rucio server could be started here (the tests skip with this reason)."""


def cache_dir() -> Path:
    return Path(os.environ.get("PANDAWMS_CACHE") or Path.home() / ".cache" / "pandawms")


def venv_dir() -> Path:
    return cache_dir() / f"rucio-server-{RUCIO_VERSION}"


def _venv_ready(venv: Path) -> bool:
    return (venv / ".complete").is_file() and (venv / "bin" / "python").exists()


def ensure_venv() -> Path:
    """The cached server virtualenv, built under a file lock the first time.

    Built in place and marked complete only at the end, so an interrupted build is redone
    rather than used half made; the lock keeps two sessions from building it at once.
    """
    venv = venv_dir()
    if _venv_ready(venv):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_ready(venv):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        deadline = time.monotonic() + INSTALL_TIMEOUT
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                f"rucio[postgresql]=={RUCIO_VERSION}",
                "gunicorn",
            ],
        ]
        for step in steps:
            left = deadline - time.monotonic()
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                shutil.rmtree(venv, ignore_errors=True)
                raise RucioUnavailable(
                    f"installing rucio=={RUCIO_VERSION} took more than {INSTALL_TIMEOUT} s"
                ) from None
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise RucioUnavailable(
                    f"cannot install rucio=={RUCIO_VERSION} into {venv}: {' | '.join(tail)}"
                )
        (venv / ".complete").write_text(RUCIO_VERSION + "\n")
        return venv


def _pg_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


def _pg_admin(sql: str, *params: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql, params or None)  # type: ignore[arg-type]


def _drop_database(name: str) -> None:
    _pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", name)
    _pg_admin(f"DROP DATABASE IF EXISTS {name}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RucioServer:
    """A running Rucio server and what the tests need to talk to it."""

    url: str
    account: str
    username: str
    password: str
    config: Path
    rse_dirs: dict[str, Path]
    scopes: tuple[str, ...]
    venv: Path
    workdir: Path
    database: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def rses(self) -> list[str]:
        return sorted(self.rse_dirs)

    def client_config(self, path: Path) -> Path:
        """A client-only ``rucio.cfg`` for the test account (what a Rucio client user has)."""
        path.write_text(
            "[client]\n"
            f"rucio_host = {self.url}\n"
            f"auth_host = {self.url}\n"
            "auth_type = userpass\n"
            f"username = {self.username}\n"
            f"password = {self.password}\n"
            f"account = {self.account}\n"
            "request_retries = 2\n"
        )
        return path

    def server_env(self, folder: Path) -> dict[str, str]:
        """The settings of a pandawms server using this Rucio (the password in a 0600 file in
        ``folder``), as an operator's env file would give them."""
        secret = folder / "rucio.password"
        secret.write_text(self.password)
        secret.chmod(0o600)
        return {
            "PANDA_DDM_RUCIO_HOST": self.url,
            "PANDA_DDM_RUCIO_ACCOUNT": self.account,
            "PANDA_DDM_RUCIO_USERNAME": self.username,
            "PANDA_DDM_RUCIO_PASSWORD_FILE": str(secret),
        }

    def log_tail(self, lines: int = 30) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # gunicorn's master was started in its own process group: end it and its workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


def _write_config(workdir: Path, db_url: str, port: int, root_password: str, site_packages: Path) -> Path:
    etc = workdir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (workdir / "log").mkdir(exist_ok=True)
    alembic = etc / "alembic.ini"
    alembic.write_text(
        "[alembic]\n"
        f"script_location = {site_packages / 'rucio' / 'db' / 'sqla' / 'migrate_repo'}\n"
        f"sqlalchemy.url = {db_url}\n"
        # Rucio's migration environment configures logging from this file: it needs the sections.
        "[loggers]\nkeys = root\n[handlers]\nkeys = console\n[formatters]\nkeys = generic\n"
        "[logger_root]\nlevel = WARN\nhandlers = console\n"
        "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nlevel = NOTSET\nformatter = generic\n"
        "[formatter_generic]\nformat = %(levelname)s [%(name)s] %(message)s\n"
    )
    cfg = etc / "rucio.cfg"
    url = f"http://127.0.0.1:{port}"
    cfg.write_text(
        "[common]\n"
        f"logdir = {workdir / 'log'}\n"
        "loglevel = WARNING\n"
        "[database]\n"
        f"default = {db_url}\n"
        "pool_size = 5\n"
        "max_overflow = 5\n"
        "[bootstrap]\n"
        "userpass_identity = ddmlab\n"
        f"userpass_pwd = {root_password}\n"
        "userpass_email = root@localhost\n"
        "[alembic]\n"
        f"cfg = {alembic}\n"
        "[policy]\n"
        "permission = generic\n"
        "schema = generic\n"
        "lfn2pfn_algorithm_default = hash\n"
        "[api]\n"
        "endpoints_remove = opendata, opendata_public\n"
        "[client]\n"
        f"rucio_host = {url}\n"
        f"auth_host = {url}\n"
        "auth_type = userpass\n"
        "username = ddmlab\n"
        f"password = {root_password}\n"
        "account = root\n"
        "request_retries = 2\n"
    )
    return cfg


def _run(cmd: list[str], env: dict[str, str], what: str, timeout: float, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def start_rucio(workdir: Path) -> RucioServer:
    """Build (or reuse) the virtualenv, make the database, bootstrap, serve and populate Rucio."""
    if not _pg_reachable():
        raise RucioUnavailable(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} (the Rucio server needs it)")
    venv = ensure_venv()
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], {}, "venv", 60
        ).strip()
    )
    database = f"rucio_test_{os.getpid()}_{secrets.token_hex(3)}"
    _pg_admin(f"CREATE DATABASE {database}")
    db_url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
    port = _free_port()
    root_password = secrets.token_hex(12)
    cfg = _write_config(workdir, db_url, port, root_password, site_packages)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "RUCIO_CONFIG": str(cfg),
        "RUCIO_HOME": str(workdir),
        "LANG": "C.UTF-8",
    }
    rse_dirs = {name: workdir / "rses" / name for name, _, _ in RSES}
    for path in rse_dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    server = RucioServer(
        url=f"http://127.0.0.1:{port}",
        account=ACCOUNT,
        username=ACCOUNT,
        password=secrets.token_hex(12),
        config=cfg,
        rse_dirs=rse_dirs,
        scopes=SCOPES,
        venv=venv,
        workdir=workdir,
        database=database,
        log=workdir / "log" / "gunicorn.log",
        env=env,
    )
    try:
        bootstrap = venv / "rucio" / "tools" / "bootstrap.py"
        if bootstrap.exists():
            _run([str(python), str(bootstrap)], env, "Rucio's bootstrap.py", START_TIMEOUT)
        else:  # the data files went elsewhere: the same three calls bootstrap.py makes
            code = (
                "from rucio.db.sqla.util import build_database, create_base_vo, create_root_account\n"
                "build_database(); create_base_vo(); create_root_account()\n"
            )
            _run([str(python), "-c", code], env, "Rucio bootstrap", START_TIMEOUT)
        assert server.log is not None
        with open(server.log, "wb") as log:
            server.process = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "120",
                    "--chdir",
                    str(workdir),
                    "rucio.web.rest.flaskapi.v1.main:application",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_ping(server)
        spec = {
            "account": server.account,
            "username": server.username,
            "password": server.password,
            "scopes": list(SCOPES),
            "rses": [
                {"name": name, "type": kind, "prefix": str(rse_dirs[name]), "attributes": attrs}
                for name, kind, attrs in RSES
            ],
            "distances": [[a, b, 1] for a, _, _ in RSES for b, _, _ in RSES if a != b],
        }
        admin = Path(__file__).with_name("rucio_admin.py")
        _run([str(python), str(admin)], env, "populating Rucio", START_TIMEOUT, stdin=json.dumps(spec))
    except BaseException:
        server.stop()
        with contextlib.suppress(Exception):
            _drop_database(database)
        raise
    return server


def _wait_ping(server: RucioServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(
                f"the Rucio server exited (code {server.process.returncode}):\n{server.log_tail()}"
            )
        try:
            reply = httpx.get(server.url + "/ping", timeout=5)
            if reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"the Rucio server did not answer /ping within {START_TIMEOUT} s:\n{server.log_tail()}"
    )


@contextlib.contextmanager
def running_rucio(workdir: Path) -> Iterator[RucioServer]:
    """A Rucio server for the duration of the block; its database is dropped afterwards."""
    server = start_rucio(workdir)
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            _drop_database(server.database)


_UPLOAD = """
import json, sys
from rucio.client import Client
from rucio.client.uploadclient import UploadClient
spec = json.load(sys.stdin)
client = Client()
items = [{"path": p, "rse": spec["rse"], "did_scope": spec["scope"], "dataset_scope": spec["scope"],
          "dataset_name": spec["dataset"]} for p in spec["paths"]]
UploadClient(_client=client).upload(items)
for name, events in spec["events"].items():
    client.set_metadata(spec["scope"], name, "events", events)
"""


def upload_dataset(
    server: RucioServer,
    workdir: Path,
    rse: str,
    scope: str,
    dataset: str,
    files: dict[str, bytes],
    events: dict[str, int],
) -> None:
    """Upload ``files`` into a new dataset with Rucio's own upload client, as a user would.

    Runs in a child process of this interpreter (which has rucio-clients) with a client-only
    rucio.cfg for the test account, so the test process's Rucio configuration stays untouched.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    cfg = server.client_config(workdir / "rucio.cfg")
    spec = {
        "rse": rse,
        "scope": scope,
        "dataset": dataset,
        "paths": [str(workdir / n) for n in sorted(files)],
        "events": events,
    }
    env = {**os.environ, "RUCIO_CONFIG": str(cfg), "TMPDIR": str(workdir)}
    done = subprocess.run(
        [sys.executable, "-c", _UPLOAD],
        input=json.dumps(spec),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rucio upload failed: {done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """One Rucio server for the whole session (import this fixture into a test module)."""
    workdir = tmp_path_factory.mktemp("rucio")
    try:
        server = start_rucio(workdir)
    except RucioUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            _drop_database(server.database)


_TRANSFER = """
import json, os, shutil, sys
from urllib.parse import urlparse
from rucio.client import Client
spec = json.load(sys.stdin)
client = Client()
dids = [f"{spec['scope']}:{n}" for n in spec["names"]]
source = client.lfns2pfns(spec["source"], dids, operation="read")
target = client.lfns2pfns(spec["target"], dids, operation="write")
for did in dids:
    src, dst = urlparse(source[did]).path, urlparse(target[did]).path
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
client.update_replicas_states(
    spec["target"], [{"scope": spec["scope"], "name": n, "state": "A"} for n in spec["names"]]
)
"""


def complete_transfers(
    server: RucioServer, workdir: Path, source: str, target: str, scope: str, names: list[str]
) -> None:
    """Do what Rucio's transfer daemons and FTS would: copy files and mark their replicas available.

    No transfer service runs in the tests, so a rule's copies stay waiting. This copies each
    file from its ``source`` RSE directory to its ``target`` one (at the paths Rucio's lfn2pfn
    gives) and sets the target replicas AVAILABLE through the REST API, which satisfies the
    replica locks of the rules waiting for them, as a finished transfer does.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = server.client_config(workdir / "rucio.cfg")
    spec = {"source": source, "target": target, "scope": scope, "names": names}
    env = {**os.environ, "RUCIO_CONFIG": str(cfg), "TMPDIR": str(workdir)}
    done = subprocess.run(
        [sys.executable, "-c", _TRANSFER],
        input=json.dumps(spec),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"completing transfers failed: {done.stderr[-3000:]}")


def run_judge_cleaner(server: RucioServer) -> None:
    """Run Rucio's judge-cleaner daemon once: rules deleted or expired are removed for good."""
    _run(
        [str(server.venv / "bin" / "rucio-judge-cleaner"), "--run-once"],
        server.env,
        "rucio-judge-cleaner",
        START_TIMEOUT,
    )
