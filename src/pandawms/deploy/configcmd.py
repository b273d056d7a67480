"""``pandawms config check|show``: the settings a service will run with, checked before it starts.

Run as ``pandawms --env-file /etc/sysconfig/panda_server_env config check`` it sees exactly what
the systemd units see, so a bad value is found at install time, not at the next restart.
Secrets are masked in everything it prints.
"""

from __future__ import annotations

import argparse
import os
import sys

from pandawms.config import Settings, load_settings, open_remote_problem


def _problems(settings: Settings) -> list[str]:
    """Things that load but would fail when the service starts: missing files, bad URLs."""
    problems = []
    listening = open_remote_problem(settings)
    if listening:
        problems.append(listening)
    for name in ("tls_cert", "tls_key", "oidc_config"):
        path = getattr(settings, name)
        if path and not os.access(path, os.R_OK):
            problems.append(f"{name}: cannot read {path}")
    if settings.tls_ca_dir and not os.path.isdir(settings.tls_ca_dir):
        problems.append(f"tls_ca_dir: {settings.tls_ca_dir} is not a directory")
    if settings.tls_key and not settings.tls_cert:
        problems.append("tls_key is set but tls_cert is not (HTTPS stays off)")
    if settings.log_dir and os.path.isdir(settings.log_dir) and not os.access(settings.log_dir, os.W_OK):
        problems.append(f"log_dir: {settings.log_dir} is not writable by this user")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from pandawms.config import normalise_url
    from pandawms.model.errors import PandaError

    try:
        make_url(normalise_url(settings.effective_db_url))
    except (ArgumentError, PandaError):
        problems.append(f"db_url is not a database URL: {settings.masked_db_url}")
    return problems


def _cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    if args.action == "show":
        for name, value in settings.shown().items():
            print(f"{name} = {value}")
        return 0
    problems = _problems(settings)
    for problem in problems:
        print(f"config: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"config OK: database {settings.masked_db_url}, http {settings.host}:{settings.port}", end="")
    print(f", https {settings.https_port}" if settings.tls_cert else ", no https", end="")
    print(f", logs {settings.log_dir or 'stderr'}, auth {settings.auth_mode}")
    return 0


def configure(sub: argparse._SubParsersAction) -> None:
    """Add ``config`` to the top-level sub-commands."""
    config = sub.add_parser("config", help="check or show the effective settings (secrets masked)")
    config.add_argument("action", choices=("check", "show"))
    config.set_defaults(func=_cmd_config)
