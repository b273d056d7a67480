"""One Settings object for the whole server.

Values come from, in order of precedence: environment variables ``PANDA_<NAME>``, an INI file
(``PANDA_CONFIG`` or ``--config``; section ``[server]``, keys as below in lower case), then the
defaults. Every value is checked at start so a typo stops the server with a message naming the
setting instead of failing later on a request.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pandawms.model.errors import PandaError
from pandawms.model.shares import parse_shares


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting and where it came from."""


def _default_data_dir() -> str:
    return os.path.join(os.getcwd(), "var")


@dataclass(frozen=True)
class Settings:
    """Every knob of the server, with its default."""

    #: SQLAlchemy URL; empty means SQLite under ``data_dir``. A secret when it holds a password:
    #: give it as PANDA_DB_URL_FILE, or keep the password apart in db_password.
    db_url: str = ""
    #: Password added to db_url (which then names only the user), normally read from a file
    #: with PANDA_DB_PASSWORD_FILE so it never sits in the environment or the unit files.
    db_password: str = ""
    #: Where the embedded database, cache files and similar live.
    data_dir: str = field(default_factory=_default_data_dir)
    #: Address and ports to listen on.
    host: str = "127.0.0.1"
    port: int = 25080
    https_port: int = 25443
    #: Log directory; empty logs to stderr only.
    log_dir: str = ""
    log_level: str = "INFO"
    #: HTTP worker processes for ``pandawms httpd`` (0 = number of cores).
    workers: int = 0
    #: Threads one worker process runs for requests. Of them at most ``db_pool_size`` do database
    #: work at once (see :attr:`request_threads` and :mod:`pandawms.core.dbthreads`): more
    #: than pooled connections only made the pool open and close overflow connections under
    #: load. Requests beyond it wait on the event loop (at most ``db_pool_timeout``, then 503).
    worker_threads: int = 40
    #: Host certificate and key for HTTPS; HTTPS is off when the certificate file is not set.
    tls_cert: str = ""
    tls_key: str = ""
    #: Hashed CA directory (like /etc/grid-security/certificates) to verify client certificates.
    tls_ca_dir: str = ""
    #: A file whose presence makes /health answer 503, so the balancer drains the node.
    drain_file: str = ""
    #: Seconds between two status lines sent to systemd.
    status_interval: int = 5
    #: Daemon tasks to run ("all" or a comma list) and period overrides ("watcher=60,archiver=600").
    daemon_tasks: str = "all"
    daemon_periods: str = ""
    #: Heartbeat limits (seconds) after which the watcher fails a job, by the state it is stuck in.
    timeout_sent: int = 1800
    timeout_running: int = 7200
    timeout_holding: int = 172800
    timeout_transferring: int = 7200
    #: Where the configurator reads queue definitions (CRIC schedconfig JSON): a file path or URL.
    queues_source: str = ""
    #: Message broker for job status messages (``stomp://user:pass@host:61613/vhost``); off when empty.
    mq_url: str = ""
    mq_destination: str = "/topic/panda.jobs"
    #: Seconds a status change may wait for an earlier, still uncommitted one before it is sent.
    mq_lag: int = 10
    #: Seconds a final job stays in the live table before the archiver moves it.
    archive_delay: int = 3600
    #: DB connection pool per process. A node opens at most
    #: ``workers * (db_pool_size + db_max_overflow)`` sessions for its httpd, plus one for the
    #: daemon's runner and one per daemon task running at that moment; size the database's
    #: ``max_connections`` for the sum over all nodes. The rule: database threads per worker =
    #: ``min(worker_threads, db_pool_size)``, so in steady use every connection is a pooled one,
    #: opened once; ``db_max_overflow`` is headroom for the few calls outside that count (health
    #: check, audit record, monitor) and for a thread that needs a second connection (an
    #: overflow connection is closed again when returned).
    db_pool_size: int = 10
    db_max_overflow: int = 5
    #: 1: each httpd worker opens its database threads' connections (``request_threads`` of them)
    #: before it serves, as the real server's connection pool does, so a load that rises later
    #: never waits on opening a session and a steady run opens none (benchmarks/README.md);
    #: 0: they are opened on first use (many small servers sharing one database, tests).
    db_pool_preopen: int = 1
    #: Seconds a request waits for a pooled connection before the server answers 503 with
    #: Retry-After: back-pressure instead of an ever longer queue when the database is slow.
    db_pool_timeout: int = 10
    #: PostgreSQL ``statement_timeout`` (MariaDB ``max_statement_time``) in milliseconds for every
    #: session (0: none), so one slow or blocked statement cannot hold a pooled connection
    #: forever; it then ends as a 503.
    db_statement_timeout: int = 0
    #: Seconds to open a database session (TCP and login) before giving up (PostgreSQL, MariaDB).
    db_connect_timeout: int = 5
    #: Seconds an httpd worker waits for the database to answer one statement, commit or ping
    #: before it cuts that connection and answers 503 with Retry-After (PostgreSQL, MariaDB; 0:
    #: never). Unlike db_statement_timeout it works when the database or the network hangs.
    db_request_timeout: int = 15
    #: Seconds told to clients in ``Retry-After`` when the server is saturated.
    busy_retry_after: int = 5
    #: Refuse to start when the database schema is older than the code ("fail") or only warn.
    schema_check: str = "fail"
    #: Largest request body accepted, bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds a client has, from connecting (or from the first byte of its next request on a
    #: kept-alive connection), to send the whole request line and headers; then a 408 and close.
    http_header_timeout: int = 20
    #: Seconds a client has, after its headers, to send the whole request body; then close.
    http_body_timeout: int = 120
    #: Seconds an idle keep-alive connection stays open between two requests.
    http_keepalive_timeout: int = 75
    #: Open connections per httpd worker (both ports). When full, the connection idle the
    #: longest is closed for a new one; with every connection busy, new ones get 503. Capped
    #: below the process's file descriptor limit, which the httpd raises to its hard limit.
    max_connections: int = 2048
    #: Submissions (job/submit, task/submit) one httpd worker runs at once, in threads of their
    #: own; more wait (up to 60 s, then 503), so big batches cannot starve pilots of threads.
    submit_lanes: int = 2
    #: Most jobs in one submit call (the real server's limit).
    max_jobs_per_submit: int = 5000
    #: Most jobs one getJob/acquire_jobs call may take.
    max_jobs_per_dispatch: int = 500
    #: Global shares as NAME=WEIGHT pairs ("Express=10,MC Simulation Full=60,User Analysis=30"):
    #: when jobs of several shares (their gshare) wait at a queue, the share furthest below its
    #: fraction of the running jobs is dispatched first. Empty: priority alone decides.
    global_shares: str = ""
    #: Authorisation mode: "open" trusts every caller (laptop, tests); "strict" needs identities.
    auth_mode: str = "open"
    #: 1 lets an open-mode server listen beyond loopback (anyone who reaches it may do anything);
    #: by default serve, httpd and config check refuse that combination.
    allow_open_remote: int = 0
    #: The VO this server serves: only FQANs and token groups of this VO grant roles.
    vo: str = "atlas"
    #: Comma-separated whole DNs (slash form; proxy CNs are ignored) that carry a role
    #: (production also grants pilot). A DN must match an entry exactly, never in part.
    production_dns: str = ""
    pilot_dns: str = ""
    manager_dns: str = ""
    admin_dns: str = ""
    #: Addresses of TLS front ends (HAProxy, nginx, Apache) trusted to pass the verified client DN
    #: in X-SSL-Client-S-DN (and FQANs in X-SSL-Client-FQANs); comma-separated IPs or CIDRs.
    trusted_proxies: str = ""
    #: JSON file listing the accepted OIDC token issuers (see docs/security.md).
    oidc_config: str = ""
    #: Seconds a process may use its copy of the ban list before reading it again.
    ban_cache_seconds: int = 30
    #: Name this node reports as modificationHost.
    node_name: str = ""
    #: Sandbox cache: directory shared by every node (empty: ``<data_dir>/cache``), host name
    #: clients are told to fetch from (empty: ``host``, else this node), largest upload in bytes,
    #: and seconds an unused file is kept.
    cache_dir: str = ""
    cache_host: str = ""
    cache_max_bytes: int = 16 * 1024 * 1024
    cache_lifetime: int = 14 * 86400
    #: Largest worker log Harvester may upload into ``<cache_dir>/jedilog`` (bytes, after
    #: decompression; later pieces of one log are appended up to this size).
    jedi_log_max_bytes: int = 100 * 1024 * 1024
    #: Largest HPO checkpoint Harvester may upload (bytes; one upload is also bounded by
    #: ``max_body_bytes``).
    hpo_checkpoint_max_bytes: int = 500 * 1024 * 1024
    #: Compact user names (``prodUserName`` form, comma separated) allowed to ask the servers to
    #: grep their own logs (``async_process/submit_grep_request``, the real server's
    #: ``allowAsyncRequest``). Empty: nobody.
    async_request_users: str = ""
    #: Directory of the proxies, key pairs and token keys Harvester and pilots may fetch
    #: (``proxies/``, ``keys/``, ``token_keys/``; see core/creds/proxies.py). Empty: none are served.
    creds_dir: str = ""
    #: Base URL of the worker-node scripts tasks run (runGen, buildGen); the generic pilot only
    #: accepts whitelisted bases, and takes the script from HARVESTER_WORKDIR when that is set.
    wn_script_base_url: str = "http://pandaserver-doma.cern.ch:25080/trf/user"
    #: Most jobs the task manager makes for one task in one pass.
    task_jobs_per_pass: int = 1000
    #: Data management (Rucio). Empty ddm_rucio_host: no DDM, tasks over datasets are refused.
    #: Auth host defaults to the server host; auth type userpass (username/password, the
    #: password from PANDA_DDM_RUCIO_PASSWORD_FILE), x509 (cert and key, or a proxy as both)
    #: or token (a bearer token read from ddm_rucio_token_path at each login).
    ddm_rucio_host: str = ""
    ddm_rucio_auth_host: str = ""
    ddm_rucio_account: str = ""
    ddm_rucio_vo: str = ""
    ddm_rucio_auth_type: str = "userpass"
    ddm_rucio_username: str = ""
    ddm_rucio_password: str = ""
    ddm_rucio_cert: str = ""
    ddm_rucio_key: str = ""
    ddm_rucio_token_path: str = ""
    #: CA bundle or hashed directory to verify Rucio's HTTPS certificate (empty: the system's).
    ddm_rucio_ca: str = ""
    #: Seconds one call to Rucio may take before it fails.
    ddm_rucio_timeout: int = 60
    #: Data carousel: most staging requests (tape to disk rules) at once, the others wait queued
    #: (0: none is staged until an operator forces it); the disk RSEs staging may go to (comma
    #: list; empty: any disk RSE an active queue reads).
    carousel_max_staging: int = 100
    carousel_destinations: str = ""
    #: Seconds before the first retry of a data-management operation that failed for a reason
    #: that may pass (an outage); each retry waits twice as long, up to ddm_retry_max.
    ddm_retry_base: int = 60
    ddm_retry_max: int = 3600
    #: Key (Fernet, urlsafe base64 of 32 bytes) that encrypts user secrets at rest; best given
    #: as PANDA_SECRETS_KEY_FILE and the same on every node. Empty: ``<data_dir>/secrets.key``,
    #: made on first use (fine for one node only).
    secrets_key: str = ""
    #: iDDS server for workflow commands (pbook *_workflow); empty: such commands are refused.
    idds_url: str = ""
    #: Token issuer for creds/get_access_token (token pilots renewing their token): the
    #: issuer's token endpoint, the client credentials of this server there (the secret best
    #: as PANDA_TOKEN_CLIENT_SECRET_FILE), an optional scope, and the client_name callers ask for.
    token_endpoint: str = ""
    token_client_id: str = ""
    token_client_secret: str = ""
    token_scope: str = ""
    token_client_name: str = "pilot_server"

    #: JSON file of retry rules replacing the built-in ones (docs in model/retry_rules.py).
    retry_rules: str = ""

    @property
    def request_threads(self) -> int:
        """Database threads per httpd worker: ``worker_threads`` capped at ``db_pool_size``."""
        return max(1, min(self.worker_threads, self.db_pool_size))

    @property
    def effective_db_url(self) -> str:
        """The URL to connect to: the configured one (with db_password), or SQLite in the data dir.

        This string holds the password: pass it to the engine only, and log :meth:`masked_db_url`.
        """
        if self.db_url:
            if self.db_password:
                return _with_password(self.db_url, self.db_password)
            return self.db_url
        return "sqlite:///" + str(Path(self.data_dir).absolute() / "pandawms.sqlite")

    @property
    def masked_db_url(self) -> str:
        """The database URL as logs and status pages may show it: any password replaced by ***."""
        return mask_url(self.effective_db_url)

    def shown(self) -> dict[str, Any]:
        """Every setting with secrets masked: what ``pandawms config show`` prints and logs may carry."""
        return {f.name: masked_value(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __repr__(self) -> str:
        """Masked, so that logging a Settings object (or a traceback showing one) leaks no secret."""
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.shown().items()) + ")"


#: Settings that may hold a password or key. They can also be given as the content of a file
#: (``PANDA_<NAME>_FILE`` or ``<name>_file`` in the INI file), and are never shown in clear.
SECRET_SETTINGS = frozenset({"db_url", "db_password", "mq_url"})
_SECRET_WORDS = ("password", "secret", "token_key", "private_key")
_MASK = "***"


def is_secret(name: str) -> bool:
    """Whether setting ``name`` may hold a secret (listed above, or named like one)."""
    return name in SECRET_SETTINGS or any(word in name for word in _SECRET_WORDS)


#: Query parameters of a URL (and ``key=value`` pairs in text) that carry a secret: libpq and
#: the MySQL drivers take ``?password=``; brokers and token endpoints take the others.
_SECRET_KEYS = re.compile(
    r"(?i)\b(password|passwd|pwd|sslpassword|secret|token|access_token|api_key)=([^&\s'\"]*)"
)
#: URLs inside free text (log lines, exception messages).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """The one masking of a URL for anything written anywhere: logs, pages, metrics, messages.

    ``scheme://user:***@host/db?password=***``: the password of the user part and every secret
    query parameter hidden. Text that is not a URL at all (a malformed setting) may hold a
    secret anywhere, so only its scheme-like prefix survives.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        head = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url)
        return f"{head.group(0) if head else ''}{_MASK} (not a URL)" if url else url
    at = rest.rfind("@")  # the last one: a password may hold "@" and "/" unescaped
    if at >= 0 and not scheme.startswith("sqlite"):
        userinfo = rest[:at]
        user, colon, _password = userinfo.partition(":")
        if colon:
            rest = f"{user}:{_MASK}@{rest[at + 1 :]}"
    return f"{scheme}://{_SECRET_KEYS.sub(lambda m: f'{m.group(1)}={_MASK}', rest)}"


def mask_secrets(text: str) -> str:
    """``text`` with every URL in it masked (:func:`mask_url`) and every ``password=...`` hidden."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    return _SECRET_KEYS.sub(lambda m: f"{m.group(1)}={_MASK}", text)


def masked_value(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` as it may be shown: URLs keep all but the password."""
    if not is_secret(name) or value in ("", None):
        return value
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return _MASK


def _with_password(url: str, password: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


def _check_db_password(values: dict[str, Any]) -> None:
    """db_password needs a URL naming the user and no password of its own (one source only)."""
    if not values.get("db_password"):
        return
    url = values.get("db_url") or ""
    if not url:
        raise ConfigError("setting db_password is set but db_url is empty (SQLite needs no password)")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"setting db_url is not a database URL: {mask_url(url)!r}") from None
    if not parsed.username:
        raise ConfigError("setting db_password needs a user name in db_url (postgresql://USER@host/db)")
    if parsed.password:
        raise ConfigError("db_url has a password and db_password is set too; keep one of them")


def _read_secret_file(path: str, source: str) -> str:
    """The content of a secret file without its final line break; the error names the file only."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path} ({source}): {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the secret file {path} ({source}) is not UTF-8 text") from None


_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """Read a systemd ``EnvironmentFile``: ``KEY=VALUE`` lines, ``#``/``;`` comments, optional quotes.

    The CLI's ``--env-file`` and the deployment tests use it so that a command run by hand sees
    exactly the settings the units see.
    """
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        key, eq, value = stripped.partition("=")
        key = key.strip()
        if not eq or not _ENV_KEY.match(key):
            raise ConfigError(f"{source} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = re.sub(r'\\(["\\$`])', r"\1", value)
        result[key] = value
    return result


_CHOICES: dict[str, tuple[str, ...]] = {
    "schema_check": ("fail", "warn"),
    "auth_mode": ("open", "strict"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "ddm_rucio_auth_type": ("userpass", "x509", "token"),
}
_RANGES: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "https_port": (1, 65535),
    "workers": (0, 512),
    "worker_threads": (1, 1000),
    "status_interval": (1, 3600),
    "timeout_sent": (10, 10**7),
    "timeout_running": (10, 10**7),
    "timeout_holding": (10, 10**8),
    "timeout_transferring": (10, 10**7),
    "archive_delay": (0, 10**8),
    "mq_lag": (0, 3600),
    "ban_cache_seconds": (1, 60),
    "db_pool_size": (1, 1000),
    "db_max_overflow": (0, 1000),
    "db_pool_timeout": (1, 3600),
    "db_statement_timeout": (0, 3600 * 1000),
    "busy_retry_after": (1, 3600),
    "db_connect_timeout": (1, 600),
    "db_request_timeout": (0, 86400),
    "max_body_bytes": (1024, 10 * 1024**3),
    "http_header_timeout": (1, 3600),
    "http_body_timeout": (1, 3600),
    "http_keepalive_timeout": (1, 3600),
    "max_connections": (16, 10**6),
    "max_jobs_per_submit": (1, 100000),
    "submit_lanes": (1, 64),
    "max_jobs_per_dispatch": (1, 10000),
    "cache_max_bytes": (1024, 10 * 1024**3),
    "cache_lifetime": (60, 10**9),
    "jedi_log_max_bytes": (1024, 10 * 1024**3),
    "hpo_checkpoint_max_bytes": (1024, 10 * 1024**3),
    "task_jobs_per_pass": (1, 100000),
    "ddm_rucio_timeout": (1, 3600),
    "carousel_max_staging": (0, 10**6),
    "ddm_retry_base": (1, 86400),
    "ddm_retry_max": (1, 86400 * 7),
    "allow_open_remote": (0, 1),
    "db_pool_preopen": (0, 1),
}


def _convert(name: str, raw: str, typ: Any, source: str) -> Any:
    if typ is int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"setting {name} ({source}) must be an integer, got {raw!r}") from None
        low, high = _RANGES.get(name, (-(2**63), 2**63))
        if not low <= value <= high:
            raise ConfigError(f"setting {name} ({source}) must be between {low} and {high}, got {value}")
        return value
    value_s = raw.strip()
    if name == "log_level":
        value_s = value_s.upper()
    choices = _CHOICES.get(name)
    if choices and value_s not in choices:
        raise ConfigError(f"setting {name} ({source}) must be one of {', '.join(choices)}, got {raw!r}")
    return value_s


def load_settings(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, the INI file, the environment and explicit overrides.

    ``environ`` replaces ``os.environ`` (tests and tools that check an env file before it is
    installed). A secret setting may also come from a file named by ``PANDA_<NAME>_FILE`` (or
    ``<name>_file`` in the INI file), so that passwords live in a root-owned file rather than in
    the environment, where ``/proc/<pid>/environ`` and ``systemctl show`` would expose them.
    """
    env_map: Mapping[str, str] = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    file_keys = {n + "_file": n for n in names if is_secret(n) and n + "_file" not in names}
    values: dict[str, Any] = {}
    path = config_file or env_map.get("PANDA_CONFIG")
    if path:
        parser = configparser.ConfigParser()
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"config file {path} is not a valid INI file: {exc}") from None
        for section in parser.sections():
            for key, raw in parser.items(section):
                if key in file_keys:
                    where = f"{path} [{section}] {key}"
                    values[file_keys[key]] = _read_secret_file(raw.strip(), where)
                    continue
                if key not in names:
                    raise ConfigError(f"unknown setting {key!r} in [{section}] of {path}")
                values[key] = _convert(key, raw, hints[key], f"{path} [{section}]")
    for key in names:
        env = env_map.get("PANDA_" + key.upper())
        file_key = key + "_file"
        secret_path = env_map.get("PANDA_" + file_key.upper()) if file_key in file_keys else None
        if env is not None and secret_path is not None:
            raise ConfigError(f"both PANDA_{key.upper()} and PANDA_{file_key.upper()} are set; keep one")
        if secret_path is not None:
            values[key] = _read_secret_file(secret_path, "env PANDA_" + file_key.upper())
        elif env is not None:
            values[key] = _convert(key, env, hints[key], "env PANDA_" + key.upper())
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in names:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _convert(key, str(value), hints[key], "command line")
    _check_db_url(values)
    _check_db_password(values)
    _check_global_shares(values)
    _check_dn_lists(values)
    return Settings(**values)


#: Settings that list DNs granting a role.
DN_LIST_SETTINGS = ("production_dns", "pilot_dns", "manager_dns", "admin_dns")


def _check_dn_lists(values: dict[str, Any]) -> None:
    """Role DN lists hold whole slash-form DNs: a fragment (``CN=Prod``) would match nobody."""
    for name in DN_LIST_SETTINGS:
        for item in str(values.get(name) or "").split(","):
            item = item.strip()
            if item and not item.startswith("/"):
                raise ConfigError(
                    f"{name}: {item[:100]!r} is not a whole DN; give DNs in slash form "
                    "(/DC=ch/DC=cern/OU=Users/CN=Jane Doe), they match exactly"
                )


#: Driver used when a URL names only the database kind.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "oracle": "oracle+oracledb",
}


def normalise_url(url: str) -> str:
    """Pick our driver for bare ``postgresql://``, ``mysql://`` and ``mariadb://`` URLs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: without a scheme we cannot tell where a password would be to mask it.
        raise PandaError("the database URL has no scheme (e.g. sqlite:///path or postgresql://host/db)")
    if "+" not in scheme and scheme in _DRIVERS:
        return _DRIVERS[scheme] + "://" + rest
    return url


def _check_db_url(values: dict[str, Any]) -> None:
    """A db_url that does not parse stops every command here, with the URL masked.

    Left to the engine, a bad port or bracket failed with a traceback, and a URL without a
    scheme was echoed whole by ``config check``, password included.
    """
    url = values.get("db_url") or ""
    if not url:
        return
    try:
        parsed = make_url(normalise_url(url))
        _ = parsed.port  # the port is parsed lazily by some versions
    except (ArgumentError, ValueError, PandaError) as exc:
        reason = exc.message if isinstance(exc, PandaError) else type(exc).__name__
        raise ConfigError(f"setting db_url is not a database URL ({reason}): {mask_url(url)}") from None


def _check_global_shares(values: dict[str, Any]) -> None:

    try:
        parse_shares(values.get("global_shares") or "")
    except ValueError as exc:
        raise ConfigError(f"global_shares: {exc}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or "" (every address): may be reachable from elsewhere


def open_remote_problem(settings: Settings) -> str | None:
    """Why these settings must not start a server: open mode listening beyond loopback.

    Open mode trusts every caller with everything (submit as anyone, kill any job, act as a
    pilot); that is for a laptop or a test, where only this machine can connect.
    """
    if settings.auth_mode != "open" or _is_loopback(settings.host) or settings.allow_open_remote:
        return None
    return (
        f"auth_mode is open and host is {settings.host or '(all addresses)'}: in open mode anyone who "
        "can reach the server may submit, kill and dispatch any job as anyone. Use PANDA_AUTH_MODE=strict, "
        "listen on 127.0.0.1, or set PANDA_ALLOW_OPEN_REMOTE=1 if that is really meant"
    )
