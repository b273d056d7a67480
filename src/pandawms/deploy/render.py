"""``pandawms deploy render``: every file a node (and its balancer and cache) needs, in one directory.

Rendering is a pure function of the command-line values (no file on the node is read or
changed), so the same command works on a build host, in CI and in the tests; installing the
files is then a copy, described in docs/node-onboarding.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: File name in DEST -> where it is installed on a node (printed after rendering).
INSTALL_PATHS = {
    "panda.service": "/etc/systemd/system/panda.service",
    "panda_httpd.service": "/etc/systemd/system/panda_httpd.service",
    "panda_daemon.service": "/etc/systemd/system/panda_daemon.service",
    "panda_server_env": "(the --env-file path)",
    "panda.logrotate": "/etc/logrotate.d/panda",
    "haproxy.cfg": "/etc/haproxy/haproxy.cfg (balancer hosts)",
    "squid.conf": "/etc/squid/squid.conf (each node)",
}


def render_files(args: argparse.Namespace) -> dict[str, str]:
    """File name -> content for the parsed ``deploy render`` arguments."""
    # Imported here: the CLI builds its parser on every call and should not pay for these.
    from pandawms.deploy.haproxy import parse_nodes, render_haproxy
    from pandawms.deploy.squid import render_squid
    from pandawms.deploy.systemd import (
        NodeLayout,
        render_daemon_unit,
        render_env_file,
        render_httpd_unit,
        render_logrotate,
        render_parent_unit,
    )

    layout = NodeLayout(
        venv=args.venv.rstrip("/") or "/",
        user=args.user,
        group=args.group or "",
        env_file=args.unit_env_file,
        log_dir=args.log_dir,
        data_dir=args.data_dir,
        db_url=args.db_url,
        db_password_file=args.db_password_file,
        grid_security=args.grid_security,
        drain_file=args.drain_file,
        trusted_proxies=args.trusted_proxies,
    )
    nodes = parse_nodes(args.nodes)
    files = {
        "panda.service": render_parent_unit(layout),
        "panda_httpd.service": render_httpd_unit(layout),
        "panda_daemon.service": render_daemon_unit(layout),
        "panda_server_env": render_env_file(layout),
        "panda.logrotate": render_logrotate(layout),
        "haproxy.cfg": render_haproxy(
            nodes,
            args.balancer_port,
            None if args.balancer_https_port == 0 else args.balancer_https_port,
            tls_mode=args.tls_mode,
            tls_pem=args.tls_pem,
            tls_ca_file=args.tls_ca_file,
        ),
        "squid.conf": render_squid(
            [(n[0], n[1]) for n in parse_nodes(args.squid_origins)]
            if args.squid_origins
            else [("127.0.0.1", 25080)],
            args.squid_port,
            log_dir=args.squid_log_dir,
            cache_dir=args.squid_cache_dir,
            pid_file=args.squid_pid_file,
        ),
    }
    return files


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        files = render_files(args)
    except ValueError as exc:
        print(f"pandawms deploy render: {exc}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = dest / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        # The env file may name secrets (a DB URL with a password, a broker URL): not world-readable.
        os.chmod(tmp, 0o640 if name == "panda_server_env" else 0o644)
        os.replace(tmp, path)
        target = INSTALL_PATHS[name].replace("(the --env-file path)", args.unit_env_file)
        print(f"{path}  ->  {target}")
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``deploy`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="deploy_command", required=True)
    render = sub.add_parser(
        "render",
        help="write systemd units, env file, logrotate, haproxy and squid configs into DEST",
        description="Render the deployment files of a node for a virtualenv (see docs/node-onboarding.md).",
    )
    render.add_argument("--venv", default=sys.prefix, help="virtualenv pandawms is installed in (/opt/panda)")
    render.add_argument("--user", default="atlpan", help="service user (default atlpan)")
    render.add_argument("--group", default="", help="service group (default: the user's name)")
    render.add_argument("--dest", required=True, help="directory to write the files into")
    render.add_argument(
        "--env-file",
        dest="unit_env_file",
        default="/etc/sysconfig/panda_server_env",
        help="where the units read their environment (default /etc/sysconfig/panda_server_env)",
    )
    render.add_argument("--log-dir", default="/var/log/panda")
    render.add_argument("--data-dir", default="/var/lib/panda")
    render.add_argument(
        "--db-url", default="postgresql://panda@localhost:5432/panda", help="database URL, no password"
    )
    render.add_argument(
        "--db-password-file",
        default="/etc/panda/db_password",
        help="file holding the database password ('' for none)",
    )
    render.add_argument("--grid-security", default="/etc/grid-security", help="host cert, key and CA dir")
    render.add_argument("--drain-file", default="/etc/iss.nologin", help="file that drains the node")
    render.add_argument(
        "--trusted-proxies", default="", help="balancer addresses whose DN headers are trusted"
    )
    render.add_argument(
        "--nodes",
        default="localhost:25080",
        help="httpd nodes behind haproxy: host[:http_port[:https_port]],... (default localhost:25080)",
    )
    render.add_argument("--balancer-port", type=int, default=25080)
    render.add_argument("--balancer-https-port", type=int, default=25443, help="0: no HTTPS frontend")
    render.add_argument("--tls-mode", choices=("passthrough", "terminate"), default="passthrough")
    render.add_argument("--tls-pem", default="/etc/haproxy/hostcert_and_key.pem", help="terminate: cert+key")
    render.add_argument("--tls-ca-file", default="/etc/haproxy/ca-bundle.pem", help="terminate: client CAs")
    render.add_argument("--squid-port", type=int, default=25085)
    render.add_argument("--squid-origins", default="", help="servers behind squid (default 127.0.0.1:25080)")
    render.add_argument("--squid-log-dir", default="/var/log/squid")
    render.add_argument("--squid-cache-dir", default="", help="disk cache directory ('' = memory only)")
    render.add_argument(
        "--squid-pid-file", default="/run/squid.pid", help="as the distribution's squid unit expects"
    )
    render.set_defaults(func=_cmd_render)
