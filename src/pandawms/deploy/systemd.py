"""systemd units, the environment file and the logrotate file for a node, rendered for a virtualenv.

The shape follows how the production PanDA nodes are run: a oneshot parent ``panda.service``
whose only work is the schema check (so ``systemctl status panda.service`` shows that line),
and two real services, ``panda_httpd`` and ``panda_daemon``, that start and stop with it.
Unlike the original we refuse to start the children when the check fails (``Requires=`` on
the parent), and logrotate only sends SIGHUP: our processes reopen their log files, so a
rotation restarts nothing and drops no request.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from dataclasses import dataclass

from pandawms.config import Settings, is_secret


@dataclass(frozen=True)
class NodeLayout:
    """Where things live on a node; every rendered file is derived from these."""

    venv: str = "/opt/panda"
    user: str = "atlpan"
    group: str = ""
    env_file: str = "/etc/sysconfig/panda_server_env"
    log_dir: str = "/var/log/panda"
    data_dir: str = "/var/lib/panda"
    db_url: str = "postgresql://panda@localhost:5432/panda"
    #: File holding the database password (mode 0400, owned by the service user); "" for none.
    db_password_file: str = "/etc/panda/db_password"
    grid_security: str = "/etc/grid-security"
    #: The balancer takes the node out while this file exists (the ATLAS nodes use /etc/iss.nologin).
    drain_file: str = "/etc/iss.nologin"
    #: Comma list of balancer addresses whose DN headers the server trusts.
    trusted_proxies: str = ""
    #: Days of rotated logs kept.
    keep_days: int = 180

    @property
    def run_group(self) -> str:
        """The service group: the given one, or the user's name (its private group)."""
        return self.group or self.user

    @property
    def pandawms(self) -> str:
        """The ``pandawms`` command installed in the virtualenv."""
        return f"{self.venv.rstrip('/')}/bin/pandawms"


def _managed_dir(path: str, root: str) -> str:
    """``LogsDirectory=``/``StateDirectory=`` value when ``path`` lies under systemd's ``root``."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :].strip("/") if path.startswith(prefix) and len(path) > len(prefix) else ""


def _service_common(layout: NodeLayout) -> str:
    """Lines every real service shares: identity, environment, directories, hardening."""
    lines = [
        f"User={layout.user}",
        f"Group={layout.run_group}",
        f"EnvironmentFile={layout.env_file}",
        f"WorkingDirectory={layout.data_dir}" if _managed_dir(layout.data_dir, "/var/lib") else "",
    ]
    logs = _managed_dir(layout.log_dir, "/var/log")
    state = _managed_dir(layout.data_dir, "/var/lib")
    if logs:
        lines += [f"LogsDirectory={logs}", "LogsDirectoryMode=0755"]
    if state:
        lines += [f"StateDirectory={state}", "StateDirectoryMode=0750"]
    lines += ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=full"]
    return "\n".join(line for line in lines if line)


def render_parent_unit(layout: NodeLayout) -> str:
    """``panda.service``: oneshot, stays "active (exited)", runs the schema check before anything."""
    return f"""\
# panda.service: the parent of panda_httpd.service and panda_daemon.service (pandawms).
# Starting it runs the schema check, then starts both children; stopping it stops both.
# "systemctl status panda.service" shows the "DB schema check: ..." line; the children's
# state is in "systemctl status panda_httpd.service panda_daemon.service".
[Unit]
Description=PanDA server (pandawms): schema check and parent of panda_httpd and panda_daemon
Wants=network-online.target panda_httpd.service panda_daemon.service
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
{_service_common(layout)}
# A database older than the code makes the check exit non-zero (PANDA_SCHEMA_CHECK=fail),
# so panda.service fails and the children, which require it, do not start.
ExecStartPre={layout.pandawms} db check
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
"""


def render_httpd_unit(layout: NodeLayout) -> str:
    """``panda_httpd.service``: the HTTP(S) master and its workers, ready and status over sd_notify."""
    return f"""\
# panda_httpd.service: the pandawms HTTP (25080) and HTTPS (25443) service.
# The master process sends READY and the "Total requests: ...; Idle/Busy workers ..." status
# line (systemctl status); "systemctl reload" makes every process reopen its log files.
[Unit]
Description=PanDA server (pandawms) httpd service
PartOf=panda.service
Requires=panda.service
After=panda.service network-online.target

[Service]
Type=notify
# Only the master talks to systemd; the workers it forks must not overwrite its status.
NotifyAccess=main
{_service_common(layout)}
ExecStart={layout.pandawms} httpd
ExecReload=/bin/kill -HUP $MAINPID
# The master stops its workers itself (up to 30 s for requests in flight); what is left after
# that is killed.
KillMode=mixed
TimeoutStopSec=45
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=panda.service
"""


def render_daemon_unit(layout: NodeLayout) -> str:
    """``panda_daemon.service``: the periodic tasks, restarted when it dies."""
    return f"""\
# panda_daemon.service: the pandawms periodic tasks (watcher, archiver, configurator...).
# Fleet-wide tasks take a lease in the database, so every node can run this service.
[Unit]
Description=PanDA server (pandawms) daemon service
PartOf=panda.service
Requires=panda.service
After=panda.service network-online.target

[Service]
Type=notify
NotifyAccess=main
{_service_common(layout)}
ExecStart={layout.pandawms} daemon
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
TimeoutStopSec=60
Restart=on-failure
RestartSec=10
LimitNOFILE=65536

[Install]
WantedBy=panda.service
"""


def render_logrotate(layout: NodeLayout) -> str:
    """``/etc/logrotate.d/panda``: rotate, then SIGHUP the running services (no copytruncate, no restart)."""
    return f"""\
# /etc/logrotate.d/panda (pandawms). The services reopen their log files on SIGHUP, which
# "systemctl reload" sends, so nothing restarts and no line is lost.
{layout.log_dir.rstrip("/")}/*.log {{
    daily
    rotate {layout.keep_days}
    dateext
    compress
    delaycompress
    missingok
    notifempty
    sharedscripts
    su {layout.user} {layout.run_group}
    create 0644 {layout.user} {layout.run_group}
    postrotate
        for unit in panda_httpd.service panda_daemon.service; do
            if /usr/bin/systemctl -q is-active "$unit"; then /usr/bin/systemctl reload "$unit"; fi
        done
        true
    endscript
}}
"""


def setting_docs() -> list[tuple[str, list[str]]]:
    """Settings in declaration order, grouped under the ``#:`` comment above them in config.py.

    Read from the source so the env file documents exactly the settings the loader knows, with
    the words the code itself carries.
    """
    names = [f.name for f in dataclasses.fields(Settings)]
    groups: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    after_comment = False
    field_line = re.compile(r"^\s{4}([a-z_][a-z0-9_]*)\s*:")
    seen: set[str] = set()
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            if not after_comment:
                pending = []
            pending.append(stripped[2:].strip())
            after_comment = True
            continue
        match = field_line.match(line)
        if match and match.group(1) in names and match.group(1) not in seen:
            if after_comment or not groups:
                groups.append((" ".join(pending) if after_comment else "", []))
            groups[-1][1].append(match.group(1))
            seen.add(match.group(1))
        if stripped:
            after_comment = False
    for name in names:
        if name not in seen:
            groups.append(("", [name]))
    return groups


def _default_text(name: str) -> str:
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return str(field.default)
    return "(depends on where it runs)"


def render_env_file(layout: NodeLayout) -> str:
    """``/etc/sysconfig/panda_server_env``: node values set, every other setting shown with its default."""
    gs = layout.grid_security.rstrip("/")
    chosen: dict[str, str] = {
        "db_url": layout.db_url,
        "data_dir": layout.data_dir,
        "host": "0.0.0.0",
        "log_dir": layout.log_dir,
        "tls_cert": f"{gs}/hostcert.pem",
        "tls_key": f"{gs}/hostkey.pem",
        "tls_ca_dir": f"{gs}/certificates",
        "drain_file": layout.drain_file,
        "auth_mode": "strict",
        "schema_check": "fail",
    }
    if layout.trusted_proxies:
        chosen["trusted_proxies"] = layout.trusted_proxies
    out = [
        f"# {layout.env_file}: environment of panda.service, panda_httpd.service and panda_daemon.service.",
        "# Rendered by 'pandawms deploy render'. systemd EnvironmentFile format: KEY=VALUE, one per line,",
        "# no shell expansion. Check it with: pandawms --env-file THIS_FILE config check",
        "#",
        "# Secrets: a secret setting (db_url, db_password, mq_url and any *password*/*secret* setting)",
        "# can be read from a file instead: PANDA_<NAME>_FILE=/path. Keep such files mode 0400, owned by",
        f"# {layout.user}; their content is never logged (URLs are logged as user:***@host).",
        "",
        f"VIRTUAL_ENV={layout.venv}",
        f"PATH={layout.venv.rstrip('/')}/bin:/usr/local/bin:/usr/bin:/bin",
        "TZ=UTC",
        "PYTHONUNBUFFERED=1",
        f"X509_CERT_DIR={gs}/certificates",
        "",
        "# --- pandawms settings: every one is listed; a commented line shows the default ---",
    ]
    for comment, names in setting_docs():
        out.append("")
        if comment:
            out += ["# " + line for line in textwrap.wrap(comment.replace("``", ""), 96)]
        for name in names:
            key = "PANDA_" + name.upper()
            if name == "db_password":
                if layout.db_password_file:
                    out.append(f"PANDA_DB_PASSWORD_FILE={layout.db_password_file}")
                else:
                    out.append("#PANDA_DB_PASSWORD_FILE=/etc/panda/db_password")
                continue
            if name in chosen:
                out.append(f"{key}={chosen[name]}")
            elif is_secret(name):
                out.append(f"#{key}_FILE=")
            else:
                out.append(f"#{key}={_default_text(name)}")
    return "\n".join(out) + "\n"
