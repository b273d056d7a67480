"""The real PanDA server, installed by ``setup.sh``, served by Apache + mod_wsgi on loopback.

Everything it needs at run time is written under the cache's ``run-<port>/`` directory: the
server's own configuration (``etc/panda/panda_server.cfg``, ``panda_common.cfg``, read through
``PANDA_HOME``), a small WSGI entry point, an Apache configuration of its own (Debian's
``apache2`` binary and modules, not the system's sites), logs. Its database is built from the
panda-database repository's PostgreSQL files, the way that repository's init script runs them,
into a database of its own on the shared PostgreSQL.

Identity. The real server reads the caller's identity from the WSGI environ (``SSL_CLIENT_S_DN``
and the ``GRST_CRED_*`` VOMS attributes that mod_gridsite sets); pilot calls need a DN with the
production role. This benchmark measures both servers over plain HTTP on loopback (pandawms in
its open mode, which trusts every caller), so the entry point gives every request the identity
of a user certificate generated for the run: its DN, listed in ``production_dns``, and the
``/atlas/Role=production`` attribute. TLS is left out of both servers alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Debian's Apache modules.
MODULES = Path("/usr/lib/apache2/modules")
#: The order of the repository's init script: components, then kinds of object.
COMPONENTS = ("PANDA", "PANDAMETA", "PANDAARCH", "PANDABIGMON", "DEFT", "PARTITION")
KINDS = (
    "",
    "_TABLE",
    "_VIEW",
    "_TYPE",
    "_SEQUENCE",
    "_FUNCTION",
    "_TRIGGER",
    "_SCHEDULER_JOBS",
    "_PROCEDURE",
)


@dataclass
class PeerConfig:
    """Where the installation is and how to serve it."""

    cache: Path
    venv: Path
    database: str = "pandawms_peer_real"
    #: Where the schema is built once; each run's database is a copy of it.
    template: str = "pandawms_peer_template"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    processes: int = 2
    threads: int = 4
    #: Database connections per process (the server's ``nDBConnection``); 0 = one per thread.
    db_connections: int = 0
    site: str = "BENCH_SITE"
    service_user: str = "www-data"
    #: The server's log level: INFO as pandawms's default (the package's template says DEBUG).
    log_level: str = "INFO"

    @property
    def schema_dir(self) -> Path:
        return self.cache / "panda-database" / "schema" / "postgres"

    @property
    def site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))


def default_cache() -> Path:
    """``$PANDAWMS_CACHE/peer`` or ``~/.cache/pandawms/peer``, as ``setup.sh`` uses."""
    root = os.environ.get("PANDAWMS_CACHE") or str(Path.home() / ".cache" / "pandawms")
    return Path(root) / "peer"


def _psql(cfg: PeerConfig, database: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-h",
            cfg.pg_host,
            "-p",
            str(cfg.pg_port),
            "-U",
            cfg.pg_user,
            "-d",
            database,
            *args,
        ],
        capture_output=True,
        text=True,
        check=check,
    )


def _partman_major(cfg: PeerConfig) -> int:
    out = _psql(cfg, cfg.template, "-tAc", "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")
    version = out.stdout.strip()
    return int(version.split(".")[0]) if version else 0


def build_schema(cfg: PeerConfig, log: Path) -> dict[str, Any]:
    """The template database with the repository's schema; returns the schema version and errors.

    As the repository's init script: role ``panda`` (search path ``doma_panda``, here only in
    this database), pg_partman in schema ``partman``, then every ``pg_<component><kind>.sql``
    without stopping at errors, the version row, ``post_step_panda.sql``. Left out: pg_cron (it
    needs ``shared_preload_libraries`` and a restart of PostgreSQL, and only refreshes
    statistics tables). Debian 12 ships pg_partman 4, whose name for range partitioning is
    ``native``; the partitioning file says ``range`` (pg_partman 5), so with version 4 it is
    run with that one word changed.
    """
    version = (cfg.schema_dir / "version").read_text().strip()
    db = cfg.template
    _psql(
        cfg, "postgres", "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', "-c", f'CREATE DATABASE "{db}"'
    )
    _psql(
        cfg,
        "postgres",
        "-c",
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'panda') "
        "THEN CREATE ROLE panda LOGIN; END IF; END$$",
    )
    _psql(
        cfg,
        db,
        "-c",
        "CREATE SCHEMA IF NOT EXISTS partman",
        "-c",
        "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman",
    )
    partman = _partman_major(cfg)
    errors: list[str] = []
    with log.open("w") as out:
        for comp in COMPONENTS:
            for kind in KINDS:
                path = cfg.schema_dir / "sqls" / f"pg_{comp}{kind}.sql"
                if not path.exists():
                    continue
                if comp == "PARTITION" and partman == 4:
                    patched = log.with_name("pg_PARTITION.partman4.sql")
                    patched.write_text(path.read_text().replace("p_type => 'range'", "p_type => 'native'"))
                    path = patched
                result = _psql(cfg, db, "-f", str(path), check=False)
                out.write(f"== {path}\n{result.stdout}{result.stderr}\n")
                errors += [line for line in result.stderr.splitlines() if "ERROR" in line]
        major, minor, patch = version.split(".")
        _psql(
            cfg,
            db,
            "-c",
            f"INSERT INTO doma_panda.pandadb_version (component, major, minor, patch) VALUES ('PanDA', '{major}', '{minor}', '{patch}')",  # noqa: S608, E501 - the repository's version file
        )
        result = _psql(cfg, db, "-f", str(cfg.schema_dir / "sqls" / "post_step_panda.sql"), check=False)
        out.write(f"== post_step_panda.sql\n{result.stdout}{result.stderr}\n")
        errors += [line for line in result.stderr.splitlines() if "ERROR" in line]
    add_queue(cfg)
    # Most objects say OWNER TO panda; the rest (made by the superuser running the files) too.
    for schema in ("doma_panda", "doma_pandameta", "doma_pandaarch", "doma_deft", "doma_pandabigmon"):
        _psql(
            cfg,
            db,
            "-c",
            f"GRANT USAGE ON SCHEMA {schema} TO panda",
            "-c",
            f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO panda",
            "-c",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO panda",
            check=False,
        )
    return {"schema_version": version, "partman": partman, "errors": errors}


def clean_runs(cfg: PeerConfig) -> None:
    """Remove the run directories (configuration and logs) of earlier runs."""
    for run in cfg.cache.glob("run-*"):
        shutil.rmtree(run, ignore_errors=True)


def fresh_database(cfg: PeerConfig) -> None:
    """The run's database, a copy of the template (seconds, where building it takes ~30 s)."""
    db = cfg.database
    _psql(
        cfg,
        "postgres",
        "-c",
        f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)',
        "-c",
        f'CREATE DATABASE "{db}" TEMPLATE "{cfg.template}"',
        "-c",
        f'ALTER ROLE panda IN DATABASE "{db}" SET search_path = doma_panda, public',
    )


def drop_databases(cfg: PeerConfig) -> None:
    for db in (cfg.database, cfg.template):
        _psql(cfg, "postgres", "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def add_queue(cfg: PeerConfig) -> None:
    """The benchmark's queue (its schedconfig entry: online, production, unified)."""
    data = {
        "status": "online",
        "type": "production",
        "cloud": "WORLD",
        "nickname": cfg.site,
        "siteid": cfg.site,
        "atlas_site": cfg.site,
        "vo_name": "atlas",
        "memory": 0,
        "maxrss": 0,
        "minrss": 0,
        "maxtime": 0,
        "maxinputsize": 0,
        "corecount": 1,
        "capability": "ucore",
        "catchall": "",
        "ddm": "",
        "workflow": "pull_ups",
        "pilot_manager": "local",
        "harvester": "",
        "is_cvmfs": True,
    }
    payload = json.dumps(data).replace("'", "''")
    _psql(
        cfg,
        cfg.template,
        "-c",
        f"INSERT INTO doma_panda.schedconfig_json (panda_queue, data, last_update) VALUES ('{cfg.site}', '{payload}', now() AT TIME ZONE 'UTC')",  # noqa: S608, E501 - our own values, quoted
    )


def make_identity(run: Path) -> str:
    """A CA and a user certificate generated for the run; returns the user's DN (slash form)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "pandawms"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Benchmark"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Benchmark CA"))
        .issuer_name(name("Benchmark CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    user = (
        x509.CertificateBuilder()
        .subject_name(name("Bench Pilot"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (run / "ca.pem").write_bytes(ca.public_bytes(pem))
    (run / "usercert.pem").write_bytes(user.public_bytes(pem))
    short = {NameOID.DOMAIN_COMPONENT: "DC", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU"}
    parts = [(a.oid, a.value if isinstance(a.value, str) else a.value.decode()) for a in user.subject]
    return "".join(f"/{short.get(oid, 'CN')}={value}" for oid, value in parts)


def _server_cfg(cfg: PeerConfig, run: Path, dn: str) -> str:
    conns = cfg.db_connections or cfg.threads
    return f"""[server]
logdir = {run}/log
loggername = prod
cache_dir = {run}/log/pandacache
native_python = {cfg.venv}/bin
native_python32 = {cfg.venv}/bin
pandaCommon_dir = {cfg.site_packages}/pandacommon
pandaPython_dir = {cfg.site_packages}/pandaserver
home_dir_cwd = {run}
backend = postgres
dbhost = {cfg.pg_host}
dbport = {cfg.pg_port}
dbuser = panda
dbpasswd = unused-trust-auth
dbname = {cfg.database}
nDBConnection = {conns}
usedbtimeout = False
dbtimeout = 300
dbbridgeverbose = False
dump_sql = False
cursor_dump = False
schemaPANDA = DOMA_PANDA
schemaMETA = DOMA_PANDAMETA
schemaPANDAARCH = DOMA_PANDAARCH
schemaJEDI = DOMA_PANDA
schemaDEFT = DOMA_DEFT
pserverhost = 127.0.0.1
pserverhosthttp = 127.0.0.1
pserveralias = 127.0.0.1
keyDir = {run}/keys
certdir = {run}
entryVerbose = False
record_statuschange = True
useJEDI = True
token_authType = None
auth_config = {run}/auth/
production_dns = {dn}
adder_plugins = any:pandaserver.dataservice.adder_dummy_plugin:AdderDummyPlugin
setupper_plugins = any:pandaserver.dataservice.setupper_dummy_plugin:SetupperDummyPlugin

[daemon]
enable = False
"""


def _common_cfg(run: Path, log_level: str) -> str:
    # The HTTP log handler the logger module always builds points at a closed loopback port.
    return f"""[logger]
loghost = 127.0.0.1
monport-apache = 9
method = GET
encoding = url
monurlprefix = /logger
nemitters = 1
migrated = True
logdir = {run}/log
log_level = {log_level}
rotating_policy = none
rotating_backup_count = 1
rotating_max_size = 1024
rotating_interval = 24
"""


def _wsgi(run: Path, dn: str) -> str:
    # os.environ first: the server reads its configuration and PANDA_BEHIND_REAL_LB at import.
    return f'''"""Entry point: the real server's WSGI application, every caller given the benchmark identity."""
import os

os.environ["PANDA_HOME"] = {str(run)!r}
os.environ["PANDA_BEHIND_REAL_LB"] = "1"

from pandaserver.server.panda import application as _panda

IDENTITY = {{
    "SSL_CLIENT_S_DN": {dn!r},
    "GRST_CRED_0": "VOMS /atlas/Role=production",
    "HTTPS": "on",
}}


def application(environ, start_response):
    environ.update(IDENTITY)
    return _panda(environ, start_response)
'''


def _apache_conf(cfg: PeerConfig, run: Path, port: int) -> str:
    modules = ["mpm_event", "authz_core", "mime", "wsgi"]
    loads = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in modules)
    return f"""ServerRoot {run}
ServerName 127.0.0.1
{loads}
PidFile {run}/httpd.pid
DefaultRuntimeDir {run}
Mutex file:{run} default
User {cfg.service_user}
Group {cfg.service_user}
Listen 127.0.0.1:{port}
ErrorLog {run}/log/apache_error.log
LogLevel warn
TypesConfig /etc/mime.types
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 600
Timeout 600
StartServers 2
ServerLimit 4
ThreadsPerChild 64
MaxRequestWorkers 256
MinSpareThreads 64
MaxSpareThreads 256
ListenBackLog 1024
DocumentRoot {run}/www
<Directory />
    Require all denied
</Directory>
<Directory {run}/www>
    Require all granted
</Directory>
WSGISocketPrefix {run}/wsgi
WSGIDaemonProcess pandasrv processes={cfg.processes} threads={cfg.threads} python-home={cfg.venv} home={run} display-name=%{{GROUP}} listen-backlog=1024 queue-timeout=600
WSGIProcessGroup pandasrv
WSGIApplicationGroup %{{GLOBAL}}
WSGIPassAuthorization On
WSGIScriptAliasMatch ^(/server/panda/.+)|(/api/.+)$ {run}/www/panda_wsgi.py
WSGIImportScript {run}/www/panda_wsgi.py process-group=pandasrv application-group=%{{GLOBAL}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(cfg: PeerConfig, port: int) -> tuple[Path, str]:
    """The run directory: configuration, entry point, Apache configuration; returns it and the DN."""
    run = cfg.cache / f"run-{port}"
    shutil.rmtree(run, ignore_errors=True)
    for sub in ("etc/panda", "log/pandacache", "www", "keys", "auth"):
        (run / sub).mkdir(parents=True)
    dn = make_identity(run)
    (run / "etc/panda/panda_server.cfg").write_text(_server_cfg(cfg, run, dn))
    (run / "etc/panda/panda_common.cfg").write_text(_common_cfg(run, cfg.log_level))
    (run / "www/panda_wsgi.py").write_text(_wsgi(run, dn))
    (run / "httpd.conf").write_text(_apache_conf(cfg, run, port))
    shutil.chown(run / "log", cfg.service_user, cfg.service_user)
    shutil.chown(run / "log/pandacache", cfg.service_user, cfg.service_user)
    return run, dn


@contextlib.contextmanager
def serving(cfg: PeerConfig, port: int = 0, start_timeout: float = 120) -> Iterator[tuple[str, int, Path]]:
    """Apache with the real server on 127.0.0.1:port; yields (url, master pid, run directory).

    Each daemon process imports the server when it starts (``WSGIImportScript``) rather than at
    its first request, so the measured window does not include the import.
    """
    port = port or free_port()
    fresh_database(cfg)
    run, _dn = prepare(cfg, port)
    proc = subprocess.Popen(
        ["/usr/sbin/apache2", "-f", str(run / "httpd.conf"), "-DFOREGROUND"],
        stdout=subprocess.DEVNULL,
        stderr=(run / "log" / "apache_stderr.log").open("wb"),
        start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(cfg, proc, url, run, start_timeout)
        yield url, proc.pid, run
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_ready(cfg: PeerConfig, proc: subprocess.Popen[bytes], url: str, run: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < 2 * cfg.processes:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = ""
            for name in ("apache_stderr.log", "apache_error.log"):
                with contextlib.suppress(OSError):
                    tail += (run / "log" / name).read_text()[-3000:]
            raise RuntimeError(f"the real server did not start ({answered} answers): {tail}")
        try:
            req = urllib.request.Request(
                url + "/api/v1/system/is_alive", headers={"Accept": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310 - loopback
                answered += answer.status == 200
        except OSError:
            time.sleep(0.5)
