"""``pandawms``: run the server and manage its database.

pandawms serve                      the HTTP API on 127.0.0.1:25080 with SQLite under ./var
pandawms db init|upgrade|check      create, migrate or check the schema
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pandawms import __version__
from pandawms.config import ConfigError, Settings, load_settings, mask_secrets, open_remote_problem
from pandawms.logsetup import setup_logging

log = logging.getLogger("pandawms.cli")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data_dir", None),
        "db_url": getattr(args, "db_url", None),
        "log_dir": getattr(args, "log_dir", None),
    }
    return load_settings(getattr(args, "config", None), overrides)


def _refuse_open_remote(settings: Settings) -> None:
    problem = open_remote_problem(settings)
    if problem:
        raise ConfigError(problem)


def _cmd_serve(args: argparse.Namespace) -> int:
    """Everything in one command: the schema created if missing, the HTTP(S) API and the daemon."""
    import dataclasses

    from pandawms.db.engine import make_engine
    from pandawms.db.versioning import database_version, init_schema
    from pandawms.httpd.master import run_httpd

    settings = _settings(args)
    _refuse_open_remote(settings)
    if not settings.workers:
        settings = dataclasses.replace(settings, workers=1)
    setup_logging(settings.log_level, settings.log_dir, "serve")
    engine = make_engine(settings.effective_db_url, pool_size=1, max_overflow=0)
    try:
        if database_version(engine) is None:
            log.info("empty database: %s", init_schema(engine))
    finally:
        engine.dispose()
    code = _check_schema_or_exit(settings)
    if code:
        return code
    log.info(
        "pandawms %s: http://%s:%d%s",
        __version__,
        settings.host,
        settings.port,
        f" and https://{settings.host}:{settings.https_port}" if settings.tls_cert else "",
    )
    return run_httpd(settings, with_daemon=not args.no_daemon)


def _check_schema_or_exit(settings: Settings) -> int:
    """Print the schema line; non-zero when the database is older than the code and that is fatal."""
    from pandawms.db.engine import make_engine
    from pandawms.db.versioning import check_schema

    log.info("database %s", settings.masked_db_url)  # never effective_db_url: it holds the password
    engine = make_engine(settings.effective_db_url, pool_size=1, max_overflow=0)
    try:
        status = check_schema(engine)
    finally:
        engine.dispose()
    print(status.line, file=sys.stderr, flush=True)
    log.info("%s", status.line)
    return 0 if status.ok or settings.schema_check == "warn" else 3


def _cmd_httpd(args: argparse.Namespace) -> int:
    from pandawms.httpd.master import run_httpd

    settings = _settings(args)
    _refuse_open_remote(settings)
    setup_logging(settings.log_level, settings.log_dir, "httpd")
    code = _check_schema_or_exit(settings)
    if code:
        return code
    return run_httpd(settings)


def _fmt_time(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else "-"


def _cmd_daemon(args: argparse.Namespace) -> int:
    from pandawms.daemon.runner import Runner, describe, run_once
    from pandawms.model.errors import PandaError

    settings = _settings(args)
    try:
        if args.list:
            setup_logging("WARNING")
            rows = describe(settings)
            header = f"{'TASK':<12} {'PERIOD':>7} {'SCOPE':<6} {'LAST RUN':<19} {'OUTCOME':<8} {'NODE':<16} {'NEXT RUN':<19} LEASE"
            print(header)
            for row in rows:
                print(
                    f"{row['task']:<12} {row['period']:>6}s {'fleet' if row['fleet_wide'] else 'node':<6} "
                    f"{_fmt_time(row['last_run']):<19} {row['last_outcome'] or '-':<8} {(row['last_node'] or '-')[:16]:<16} "
                    f"{_fmt_time(row['next_run']):<19} {row['lease_holder'] or '-'}"
                )
            return 0
        if args.once:
            setup_logging(settings.log_level)
            outcome, message = run_once(settings, args.once)
            print(f"{args.once}: {outcome}: {message}")
            return 0
        setup_logging(settings.log_level, settings.log_dir, "daemon")
        code = _check_schema_or_exit(settings)
        if code:
            return code
        return Runner(settings).run()
    except PandaError as exc:
        print(f"pandawms daemon: {exc.message}", file=sys.stderr)
        return 2


def _cmd_queues(args: argparse.Namespace) -> int:
    from pandawms.core.queues.catalogue import list_queues, load_queues
    from pandawms.core.runtime import Runtime
    from pandawms.model.errors import PandaError

    settings = _settings(args)
    setup_logging("WARNING")
    rt = Runtime.from_settings(settings)
    try:
        if args.action == "load":
            if not args.file:
                print("pandawms queues load: a FILE is required", file=sys.stderr)
                return 2
            try:
                with open(args.file, "rb") as handle:
                    print(load_queues(rt, handle.read(), replace=not args.merge))
            except OSError as exc:
                print(f"pandawms queues load: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 2
            except PandaError as exc:
                print(f"pandawms queues load: {exc.message}", file=sys.stderr)
                return 1
            return 0
        print(f"{'QUEUE':<32} {'STATUS':<10} {'TYPE':<11} {'CORES':>5} {'MAXRSS':>8} {'MAXTIME':>8}")
        for q in list_queues(rt, fresh=True):
            print(
                f"{q.name:<32} {q.status:<10} {q.type or '-':<11} {q.corecount or 0:>5} {q.maxrss or 0:>8} "
                f"{q.maxtime or 0:>8}"
            )
        return 0
    finally:
        rt.engine.dispose()


def _cmd_slots(args: argparse.Namespace) -> int:
    from pandawms.core.queues import slots
    from pandawms.core.runtime import Runtime
    from pandawms.db.engine import read_tx
    from pandawms.model.errors import PandaError

    settings = _settings(args)
    setup_logging("WARNING")
    rt = Runtime.from_settings(settings)
    try:
        if args.action in ("set", "remove"):
            if not args.queue or (args.action == "set" and args.slots is None):
                usage = "QUEUE SLOTS" if args.action == "set" else "QUEUE"
                print(f"pandawms slots {args.action}: {usage} required", file=sys.stderr)
                return 2
            number = -1 if args.action == "remove" else args.slots
            days = None if args.days is None else str(args.days)
            try:
                print(slots.set_slots(rt, args.queue, number, args.share, args.resource_type, days))
            except PandaError as exc:
                print(f"pandawms slots: {exc.message}", file=sys.stderr)
                return 2
            return 0
        with read_tx(rt.engine) as conn:
            rows = slots.list_slots(conn)
        print(f"{'QUEUE':<32} {'SHARE':<20} {'RESOURCE':<14} {'SLOTS':>8}  EXPIRES")
        for row in rows:
            expires = f"{row['expirationTime']:%Y-%m-%d %H:%M}" if row["expirationTime"] else "never"
            print(
                f"{row['pandaQueueName']:<32} {row['gshare'] or '*':<20} {row['resourceType'] or '*':<14} "
                f"{row['numSlots']:>8}  {expires}"
            )
        return 0
    finally:
        rt.engine.dispose()


def _cmd_users(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from pandawms.core.runtime import Runtime, utcnow
    from pandawms.db.engine import write_tx
    from pandawms.db.schema import banned_users

    settings = _settings(args)
    setup_logging("WARNING")
    rt = Runtime.from_settings(settings)
    try:
        with write_tx(rt.engine) as conn:
            if args.action in ("ban", "unban") and not args.name:
                print(f"pandawms users {args.action}: a NAME is required", file=sys.stderr)
                return 2
            if args.action == "ban":
                conn.execute(banned_users.delete().where(banned_users.c.name == args.name))
                conn.execute(
                    banned_users.insert().values(
                        name=args.name[:128],
                        reason=(args.reason or "")[:500],
                        banned_by="pandawms CLI",
                        created=utcnow(),
                    )
                )
                print(f"{args.name} is banned; every node refuses them within {settings.ban_cache_seconds} s")
            elif args.action == "unban":
                gone = conn.execute(banned_users.delete().where(banned_users.c.name == args.name)).rowcount
                print(f"{args.name} unbanned" if gone else f"{args.name} was not banned")
            else:
                for row in conn.execute(select(banned_users).order_by(banned_users.c.name)).mappings():
                    print(f"{row['name']:<40} {row['created']:%Y-%m-%d %H:%M} {row['reason'] or ''}")
        return 0
    finally:
        rt.engine.dispose()


def _cmd_resource_types(args: argparse.Namespace) -> int:
    from pandawms.core.queues import resource_types as rtypes
    from pandawms.core.runtime import Runtime
    from pandawms.model.errors import PandaError

    settings = _settings(args)
    setup_logging("WARNING")
    rt = Runtime.from_settings(settings)
    try:
        if args.action in ("set", "delete") and not args.name:
            print(f"pandawms resource-types {args.action}: a NAME is required", file=sys.stderr)
            return 2
        try:
            if args.action == "set":
                rtypes.set_type(
                    rt,
                    rtypes.ResourceType(
                        args.name, args.min_core, args.max_core, args.min_ram_per_core, args.max_ram_per_core
                    ),
                )
            elif args.action == "delete":
                if not rtypes.delete_type(rt, args.name):
                    print(f"no resource type {args.name}", file=sys.stderr)
                    return 1
        except PandaError as exc:
            print(f"pandawms resource-types: {exc.message}", file=sys.stderr)
            return 2

        def show(value: int | None) -> str:
            return "-" if value is None else str(value)

        print(
            f"{'resource type':<16} {'min core':>9} {'max core':>9} {'min MB/core':>12} {'max MB/core':>12}"
        )
        for t in rtypes.list_types(rt):
            print(
                f"{t.resource_name:<16} {show(t.mincore):>9} {show(t.maxcore):>9} "
                f"{show(t.minrampercore):>12} {show(t.maxrampercore):>12}"
            )
        return 0
    finally:
        rt.engine.dispose()


def _cmd_audit(args: argparse.Namespace) -> int:
    from pandawms.core.ops import audit
    from pandawms.core.runtime import Runtime

    settings = _settings(args)
    setup_logging("WARNING")
    rt = Runtime.from_settings(settings)
    try:
        rows = audit.search(rt, panda_id=args.job, user=args.user, limit=args.limit)
    finally:
        rt.engine.dispose()
    print(f"{'TIME':<19} {'METHOD':<20} {'OUTCOME':<8} {'TARGETS':<30} WHO")
    for row in rows:
        note = f"  ({row['message']})" if row["message"] else ""
        print(
            f"{row['time']:%Y-%m-%d %H:%M:%S} {row['method']:<20} {row['outcome']:<8} "
            f"{row['targets'] or '-':<30} {row['identity']} [{row['auth_method']}]{note}"
        )
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from pandawms.db.engine import make_engine
    from pandawms.db.versioning import check_schema, init_schema, upgrade_schema

    settings = _settings(args)
    setup_logging("WARNING")
    engine = make_engine(settings.effective_db_url, pool_size=1, max_overflow=0)
    try:
        if args.action == "init":
            print(init_schema(engine))
            return 0
        if args.action == "upgrade":
            print(upgrade_schema(engine))
            return 0
        status = check_schema(engine)
        print(status.line)
        return 0 if status.ok or settings.schema_check == "warn" else 1
    finally:
        engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    parser = argparse.ArgumentParser(prog="pandawms", description="An independent PanDA server.")
    parser.add_argument("--version", action="version", version=f"pandawms {__version__}")
    parser.add_argument("--config", help="INI file with a [server] section (default: $PANDA_CONFIG)")
    parser.add_argument(
        "--env-file",
        help="read this systemd EnvironmentFile first (e.g. /etc/sysconfig/panda_server_env): the units' settings",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API in one process (laptop, tests)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 25080)")
    serve.add_argument("--data-dir", help="where the embedded SQLite database lives (default ./var)")
    serve.add_argument("--db-url", help="SQLAlchemy database URL (default: SQLite in the data dir)")
    serve.add_argument("--log-dir", help="directory for log files (default: stderr only)")
    serve.add_argument("--no-daemon", action="store_true", help="do not run the periodic tasks")
    serve.set_defaults(func=_cmd_serve)

    httpd = sub.add_parser("httpd", help="the production HTTP service: N workers, HTTP and HTTPS (systemd)")
    httpd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    httpd.add_argument("--port", type=int, help="HTTP port (default 25080)")
    httpd.add_argument("--data-dir")
    httpd.add_argument("--db-url")
    httpd.add_argument("--log-dir", help="log directory (default: stderr)")
    httpd.set_defaults(func=_cmd_httpd)

    daemon = sub.add_parser("daemon", help="the periodic server-side tasks (systemd)")
    daemon.add_argument(
        "--list", action="store_true", help="show the tasks, their last and next run and lease holder"
    )
    daemon.add_argument("--once", metavar="TASK", help="run one task now in the foreground and exit")
    daemon.add_argument("--data-dir")
    daemon.add_argument("--db-url")
    daemon.add_argument("--log-dir")
    daemon.set_defaults(func=_cmd_daemon)

    queues = sub.add_parser("queues", help="load or list PanDA queue definitions (CRIC schedconfig JSON)")
    queues.add_argument("action", choices=("load", "list"))
    queues.add_argument("file", nargs="?", help="schedconfig JSON file for 'load'")
    queues.add_argument("--merge", action="store_true", help="keep queues the file does not name")
    queues.add_argument("--data-dir")
    queues.add_argument("--db-url")
    queues.set_defaults(func=_cmd_queues)

    slots = sub.add_parser(
        "slots",
        help="target slots of queues: job pressure brokerage builds up there (harvester/add_target_slots)",
    )
    slots.add_argument("action", choices=("list", "set", "remove"))
    slots.add_argument("queue", nargs="?")
    slots.add_argument("slots", nargs="?", type=int, help="cores to count as running at the queue")
    slots.add_argument("--share", help="only for this global share")
    slots.add_argument("--resource-type", help="only for this resource type (SCORE, MCORE...)")
    slots.add_argument("--days", type=int, help="expire after this many days (default: never)")
    slots.add_argument("--db-url")
    slots.add_argument("--data-dir")
    slots.set_defaults(func=_cmd_slots)

    users = sub.add_parser("users", help="ban, unban or list banned users (by compact name, e.g. 'Jane Doe')")
    users.add_argument("action", choices=("ban", "unban", "list"))
    users.add_argument("name", nargs="?")
    users.add_argument("--reason")
    users.add_argument("--db-url")
    users.add_argument("--data-dir")
    users.set_defaults(func=_cmd_users)

    rtp = sub.add_parser(
        "resource-types",
        help="list or set the resource types (SCORE, MCORE, ...) Harvester and pilots read; '-' is no limit",
    )
    rtp.add_argument("action", choices=("list", "set", "delete"))
    rtp.add_argument("name", nargs="?", help="e.g. SCORE_HIMEM")
    rtp.add_argument("--min-core", type=int)
    rtp.add_argument("--max-core", type=int)
    rtp.add_argument("--min-ram-per-core", type=int, help="MB")
    rtp.add_argument("--max-ram-per-core", type=int, help="MB")
    rtp.add_argument("--db-url")
    rtp.add_argument("--data-dir")
    rtp.set_defaults(func=_cmd_resource_types)

    aud = sub.add_parser("audit", help="who did what: submissions, kills and other state-changing calls")
    aud.add_argument("--job", type=int, help="only calls that named this PandaID")
    aud.add_argument("--user", help="only calls by identities containing this text")
    aud.add_argument("--limit", type=int, default=200)
    aud.add_argument("--db-url")
    aud.add_argument("--data-dir")
    aud.set_defaults(func=_cmd_audit)

    db = sub.add_parser("db", help="create, upgrade or check the database schema")
    db.add_argument("action", choices=("init", "upgrade", "check"))
    db.add_argument("--data-dir")
    db.add_argument("--db-url")
    db.set_defaults(func=_cmd_db)

    from pandawms.deploy.render import configure_parser as configure_deploy

    configure_deploy(sub.add_parser("deploy", help="render systemd units, the env file and logrotate config"))

    from pandawms.deploy.configcmd import configure as configure_config

    configure_config(sub)

    from pandawms.monitor.cli import configure as configure_monitor

    configure_monitor(sub)
    return parser


def _apply_env_file(path: str) -> None:
    """Put the file's variables into this process's environment, as systemd's EnvironmentFile does."""
    import os

    from pandawms.config import parse_env_file

    try:
        with open(path, encoding="utf-8") as handle:
            os.environ.update(parse_env_file(handle.read(), path))
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pandawms`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.env_file:
            _apply_env_file(args.env_file)
        return int(args.func(args))
    except ConfigError as exc:
        print(f"pandawms: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        # One line for systemctl status instead of a traceback; driver messages name the host
        # and user, never the password.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        print(f"pandawms: database error: {mask_secrets(reason)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
