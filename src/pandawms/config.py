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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting and where it came from."""


def _default_data_dir() -> str:
    return os.path.join(os.getcwd(), "var")


@dataclass(frozen=True)
class Settings:
    """Every knob of the server, with its default."""

    #: SQLAlchemy URL; empty means SQLite under ``data_dir``.
    db_url: str = ""
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
    #: Requests one worker process serves at once (its thread pool size).
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
    #: ``max_connections`` for the sum over all nodes.
    db_pool_size: int = 10
    db_max_overflow: int = 5
    #: Seconds a request waits for a pooled connection before the server answers 503 with
    #: Retry-After: back-pressure instead of an ever longer queue when the database is slow.
    db_pool_timeout: int = 10
    #: PostgreSQL ``statement_timeout`` in milliseconds for every session (0: none), so one slow
    #: or blocked statement cannot hold a pooled connection forever; it then ends as a 503.
    db_statement_timeout: int = 0
    #: Seconds told to clients in ``Retry-After`` when the server is saturated.
    busy_retry_after: int = 5
    #: Refuse to start when the database schema is older than the code ("fail") or only warn.
    schema_check: str = "fail"
    #: Largest request body accepted, bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Most jobs in one submit call (the real server's limit).
    max_jobs_per_submit: int = 5000
    #: Most jobs one getJob/acquire_jobs call may take.
    max_jobs_per_dispatch: int = 500
    #: Authorisation mode: "open" trusts every caller (laptop, tests); "strict" needs identities.
    auth_mode: str = "open"
    #: Comma-separated DN substrings that carry a role (production also grants pilot).
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

    @property
    def effective_db_url(self) -> str:
        """The URL to connect to: the configured one, or SQLite under the data directory."""
        if self.db_url:
            return self.db_url
        return "sqlite:///" + str(Path(self.data_dir).absolute() / "pandawms.sqlite")


_CHOICES: dict[str, tuple[str, ...]] = {
    "schema_check": ("fail", "warn"),
    "auth_mode": ("open", "strict"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
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
    "max_body_bytes": (1024, 10 * 1024**3),
    "max_jobs_per_submit": (1, 100000),
    "max_jobs_per_dispatch": (1, 10000),
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


def load_settings(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings from defaults, the INI file, the environment and explicit overrides."""
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("PANDA_CONFIG")
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
                if key not in names:
                    raise ConfigError(f"unknown setting {key!r} in [{section}] of {path}")
                values[key] = _convert(key, raw, hints[key], f"{path} [{section}]")
    for key in names:
        env = os.environ.get("PANDA_" + key.upper())
        if env is not None:
            values[key] = _convert(key, env, hints[key], "env PANDA_" + key.upper())
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in names:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _convert(key, str(value), hints[key], "command line")
    return Settings(**values)
