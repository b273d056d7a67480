"""Terminal views: ``pandawms jobs`` (like condor_q), ``jobs show``, ``jobs why``, ``tasks`` and
``carousel`` (the data carousel's staging requests).

They read the database directly with the same queries as the web monitor (so a shifter on the
server host needs no browser and no running httpd), take the same ``--db-url``/``--data-dir``
options as the other commands, fit their columns to the terminal, and colour statuses only when
writing to a terminal (``--color`` overrides; ``NO_COLOR`` is honoured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pandawms.config import mask_secrets, mask_url
from pandawms.monitor import cli_ops

#: ANSI colours per status (SGR parameters).
COLOURS: dict[str, str] = {
    "defined": "37",
    "assigned": "33",
    "waiting": "33",
    "throttled": "33",
    "pending": "37",
    "activated": "36",
    "sent": "35",
    "starting": "96",
    "running": "32",
    "holding": "93",
    "merging": "93",
    "transferring": "33",
    "finished": "34",
    "failed": "31;1",
    "cancelled": "90",
    "closed": "90",
}
#: Short column headers used when the full names do not fit the terminal.
SHORT: dict[str, str] = {
    "pending": "PEND",
    "defined": "DEF",
    "assigned": "ASGN",
    "waiting": "WAIT",
    "throttled": "THRT",
    "activated": "ACT",
    "sent": "SENT",
    "starting": "STRT",
    "running": "RUN",
    "holding": "HOLD",
    "merging": "MRG",
    "transferring": "XFER",
    "finished": "DONE",
    "failed": "FAIL",
    "cancelled": "CANC",
    "closed": "CLSD",
}


class Painter:
    """Colours text when the output is a terminal (or when asked)."""

    def __init__(self, stream: TextIO, mode: str = "auto") -> None:
        if mode == "always":
            self.on = True
        elif mode == "never":
            self.on = False
        else:
            self.on = stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def __call__(self, text: str, sgr: str) -> str:
        return f"\033[{sgr}m{text}\033[0m" if self.on and sgr else text

    def status(self, status: str, text: str | None = None) -> str:
        return self(text if text is not None else status, COLOURS.get(status, ""))

    def bold(self, text: str) -> str:
        return self(text, "1")


def _width() -> int:
    return max(40, shutil.get_terminal_size((120, 24)).columns)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _fmt_time(value: Any) -> str:
    return (
        value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, dt.datetime)
        else ("-" if value is None else str(value))
    )


# --- options and the runtime --------------------------------------------------------------


def _db_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--db-url", default=default, help="SQLAlchemy database URL (default: SQLite in the data dir)"
    )
    parser.add_argument("--data-dir", default=default, help="where the embedded SQLite database lives")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=argparse.SUPPRESS if suppress else "auto",
        help="colour statuses: auto (only on a terminal), always, never",
    )


def _runtime(args: argparse.Namespace) -> Any:
    """A Runtime on the configured database with a small pool; None (after a message) if absent."""
    from pandawms.config import load_settings
    from pandawms.core.runtime import Runtime
    from pandawms.db.engine import make_engine

    settings = load_settings(
        getattr(args, "config", None),
        {"db_url": getattr(args, "db_url", None), "data_dir": getattr(args, "data_dir", None)},
    )
    url = settings.effective_db_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        print(
            f"pandawms: no database at {url[len('sqlite:///') :]} (give --db-url or --data-dir, or run 'pandawms db init')",
            file=sys.stderr,
        )
        return None
    return Runtime(engine=make_engine(url, pool_size=2, max_overflow=0), settings=settings)


def _run(args: argparse.Namespace, body: Callable[[Any, Painter], int]) -> int:
    """Open the database, run ``body``, turn database errors into one line and exit code 1."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from pandawms.logsetup import setup_logging

    setup_logging("WARNING")
    rt = _runtime(args)
    if rt is None:
        return 2
    paint = Painter(sys.stdout, getattr(args, "color", "auto"))
    try:
        return body(rt, paint)
    except (OperationalError, DBAPIError) as exc:
        print(f"pandawms: database error: {mask_secrets(str(exc).splitlines()[0])}", file=sys.stderr)
        return 1
    finally:
        rt.engine.dispose()


def _watch(seconds: float | None, render: Callable[[], str]) -> int:
    """Print once, or every ``seconds`` until Ctrl-C (clearing the screen on a terminal)."""
    if not seconds:
        sys.stdout.write(render())
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            frame = render()
            if tty:
                sys.stdout.write("\033[H\033[2J")
            sys.stdout.write(frame)
            sys.stdout.write(f"(refreshing every {seconds:g} s; Ctrl-C to stop)\n")
            if not tty:
                sys.stdout.write("\n")
            sys.stdout.flush()
            time.sleep(seconds)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


# --- pandawms jobs ------------------------------------------------------------------------


def render_summary(
    counts_by_queue: Mapping[str, Mapping[str, int]],
    paint: Painter,
    width: int,
    title: str,
) -> str:
    """The condor_q-like table: one row per queue, one column per status present, totals."""
    from pandawms.monitor.queries.common import status_sort_key

    statuses = sorted({s for c in counts_by_queue.values() for s, n in c.items() if n}, key=status_sort_key)
    totals: dict[str, int] = {s: sum(c.get(s, 0) for c in counts_by_queue.values()) for s in statuses}
    grand = sum(totals.values())
    qwidth = min(max([5, *(len(q) for q in counts_by_queue)]), 40)

    def layout(headers: Mapping[str, str]) -> tuple[dict[str, int], int]:
        widths = {s: max(len(headers[s]), len(str(totals[s]))) for s in statuses}
        total_w = max(5, len(str(grand)))
        return widths, qwidth + sum(w + 1 for w in widths.values()) + total_w + 1

    headers = {s: s.upper() for s in statuses}
    widths, used = layout(headers)
    if used > width:
        headers = {s: SHORT.get(s, s[:4].upper()) for s in statuses}
        widths, used = layout(headers)
    total_w = max(5, len(str(grand)))
    lines = [paint.bold(title)]
    head = f"{'QUEUE':<{qwidth}}" + "".join(
        f" {paint.status(s, f'{headers[s]:>{widths[s]}}')}" for s in statuses
    )
    lines.append(head + f" {'TOTAL':>{total_w}}")
    for queue, counts in counts_by_queue.items():
        cells = "".join(
            f" {paint.status(s, f'{counts.get(s, 0):>{widths[s]}}') if counts.get(s) else ' ' * (widths[s] - 1) + '.'}"
            for s in statuses
        )
        lines.append(f"{_cut(queue, qwidth):<{qwidth}}{cells} {sum(counts.values()):>{total_w}}")
    if counts_by_queue:
        cells = "".join(f" {paint.bold(f'{totals[s]:>{widths[s]}}')}" for s in statuses)
        lines.append(f"{'TOTAL':<{qwidth}}{cells} {paint.bold(f'{grand:>{total_w}}')}")
    parts = ", ".join(paint.status(s, f"{totals[s]} {s}") for s in statuses)
    lines.append("")
    lines.append(f"{grand} jobs" + (f": {parts}" if parts else ""))
    return "\n".join(lines) + "\n"


def _cmd_jobs(args: argparse.Namespace) -> int:
    from pandawms.monitor.params import STATUSES
    from pandawms.monitor.queries.summary import filtered_summary

    statuses = tuple(s.strip() for s in (args.status or "").split(",") if s.strip())
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        print(
            f"pandawms jobs: unknown status {', '.join(bad)}; use one of {', '.join(STATUSES)}",
            file=sys.stderr,
        )
        return 2
    if args.watch is not None and args.watch <= 0:
        print("pandawms jobs: --watch needs a positive number of seconds", file=sys.stderr)
        return 2

    def body(rt: Any, paint: Painter) -> int:
        def frame() -> str:
            summary = filtered_summary(rt, args.task, args.user, statuses, args.queue, args.archive)
            filters = [
                f"{name}={value}"
                for name, value in (
                    ("status", args.status),
                    ("queue", args.queue),
                    ("task", args.task),
                    ("user", args.user),
                )
                if value
            ]
            where = "live + archive" if args.archive else "live table"
            title = (
                f"-- pandawms jobs @ {summary.at:%Y-%m-%d %H:%M:%S} UTC, {where}"
                + (f", {' '.join(filters)}" if filters else "")
                + f" ({mask_url(rt.engine.url.render_as_string(hide_password=False))})"
            )
            return render_summary(summary.by_queue(), paint, _width(), _cut(title, _width()))

        return _watch(args.watch, frame)

    return _run(args, body)


def _section(paint: Painter, title: str) -> str:
    return "\n" + paint.bold(title) + "\n"


def render_job(data: Mapping[str, Any], paint: Painter, width: int) -> str:
    """``pandawms jobs show``: key facts, errors explained, history, files, then all attributes."""
    job = data["job"]
    status = job.get("jobStatus") or "?"
    out = [
        paint.bold(f"Job {data['PandaID']}")
        + f" — {paint.status(status)} at {job.get('computingSite') or '(no queue)'} ({data['table']} table)"
    ]
    if data.get("error_summary") and status in ("failed", "cancelled", "closed"):
        out.append(paint(f"Why it {status}: {data['error_summary']}", "31"))
    key = [
        ("task", job.get("jediTaskID")),
        ("user", job.get("prodUserName")),
        ("name", job.get("jobName")),
        ("label", job.get("prodSourceLabel")),
        ("priority", job.get("currentPriority")),
        ("attempt", f"{job.get('attemptNr')} of {job.get('maxAttempt') or '-'}"),
        ("created", _fmt_time(job.get("creationTime"))),
        ("started", _fmt_time(job.get("startTime"))),
        ("ended", _fmt_time(job.get("endTime"))),
        ("modified", _fmt_time(job.get("modificationTime"))),
    ]
    out += [f"  {k:<10} {_cut(str(v if v is not None else '-'), width - 14)}" for k, v in key]
    if data.get("why"):
        out.append(_section(paint, "Why it has not run").rstrip("\n"))
        out.append(render_why(data["why"], paint, width).rstrip("\n"))
    out.append(_section(paint, "Errors").rstrip("\n"))
    if not data["errors"]:
        out.append("  none recorded")
    for e in data["errors"]:
        code = e["code"] or ""
        out.append(
            f"  {paint(e['source'], '1'):<10} {code!s:>6}  {e['meaning'] or '(no explanation for this code)'}"
        )
        if e["diag"]:
            out.append(f"  {'':<10} {'':>6}  diag: {_cut(e['diag'], width - 26)}")
    out.append(_section(paint, "History").rstrip("\n"))
    if not data["history"]:
        out.append("  no status changes recorded")
    for h in data["history"]:
        reason = f"  {h['reason']}" if h.get("reason") else ""
        old = h.get("oldStatus") or "-"
        new = paint.status(h["jobStatus"], h["jobStatus"].ljust(12))
        out.append(
            f"  {_fmt_time(h['modificationTime'])}  {old:>12} -> {new} {h.get('computingSite') or '-'}{reason}"
        )
    out.append(_section(paint, "Files").rstrip("\n"))
    if not data["files"]:
        out.append("  none")
    for f in data["files"]:
        out.append(
            _cut(
                f"  {f.get('type') or '-':<7} {f.get('status') or '-':<9} {f.get('lfn')}  ({f.get('dataset') or '-'})",
                width,
            )
        )
    out.append(_section(paint, "Attributes").rstrip("\n"))
    for name in sorted(job):
        value = job[name]
        if value in (None, "", "NULL"):
            continue
        out.append(
            _cut(f"  {name:<24} {_fmt_time(value) if isinstance(value, dt.datetime) else value}", width)
        )
    return "\n".join(out) + "\n"


def render_why(data: Mapping[str, Any], paint: Painter, width: int) -> str:
    """``pandawms jobs why``: the verdict, every reason found, and the facts behind them."""
    out = [paint.bold(f"Job {data['PandaID']}: ") + str(data.get("verdict"))]
    reasons = data.get("reasons") or []
    if len(reasons) > 1 or (reasons and reasons[0] != data.get("verdict")):
        for reason in reasons:
            out.append(_cut(f"  - {reason}", width))
    facts = data.get("facts") or {}
    for key, value in facts.items():
        if isinstance(value, dt.datetime):
            value = _fmt_time(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        out.append(_cut(f"    {key}: {value}", width))
    return "\n".join(out) + "\n"


def _cmd_show(args: argparse.Namespace) -> int:
    from pandawms.monitor.queries.jobs import job_detail

    def body(rt: Any, paint: Painter) -> int:
        data = job_detail(rt, args.panda_id)
        if data is None:
            print(f"pandawms jobs show: no job {args.panda_id}", file=sys.stderr)
            return 1
        if args.json:
            from pandawms.monitor.web import to_json

            sys.stdout.write(to_json(data).decode() + "\n")
            return 0
        sys.stdout.write(render_job(data, paint, _width()))
        return 0

    return _run(args, body)


def _cmd_why(args: argparse.Namespace) -> int:
    from pandawms.monitor.queries.why import why_not_running

    def body(rt: Any, paint: Painter) -> int:
        data = why_not_running(rt, args.panda_id)
        if not data.get("found"):
            print(f"pandawms jobs why: no job {args.panda_id}", file=sys.stderr)
            return 1
        if args.json:
            from pandawms.monitor.web import to_json

            sys.stdout.write(to_json(data).decode() + "\n")
            return 0
        sys.stdout.write(render_why(data, paint, _width()))
        return 0

    return _run(args, body)


RANGE_COLOURS = {
    "ready": "36",
    "sent": "35",
    "running": "32",
    "finished": "34",
    "failed": "33",
    "fatal": "31;1",
    "cancelled": "90",
}


def render_ranges(counts: Mapping[str, int], ranges: Sequence[Mapping[str, Any]], paint: Painter) -> str:
    """An event-service job's ranges, one line each, after a line of counts per status."""
    total = sum(counts.values())
    lines = [
        ", ".join(f"{paint(s, RANGE_COLOURS.get(s, ''))} {n}" for s, n in sorted(counts.items()))
        + f"  ({total} ranges)"
    ]
    if len(ranges) < total:
        lines.append(f"(first {len(ranges)} shown)")
    header = (
        f"{'EVENT RANGE ID':<40} {'STATUS':<10} {'EVENTS':>15} {'OUT':>4} {'FAIL':>6} {'HELD BY':>12}  LFN"
    )
    lines.append(header)
    for r in ranges:
        status = str(r["status"])
        events = f"{r['startEvent']}-{r['lastEvent']}"
        fails = f"{r['failedAttempt']}/{r['maxAttempt']}"
        lines.append(
            f"{r['eventRangeID']:<40} {paint(f'{status:<10}', RANGE_COLOURS.get(status, ''))} {events:>15} "
            f"{r['attemptNr']:>4} {fails:>6} {r['PandaID'] or '-':>12}  {r['LFN']}"
        )
    return "\n".join(lines) + "\n"


def _cmd_ranges(args: argparse.Namespace) -> int:
    from pandawms.core.events.store import job_range_counts, ranges_of_job
    from pandawms.db.engine import read_tx

    def body(rt: Any, paint: Painter) -> int:
        with read_tx(rt.engine) as conn:
            counts = job_range_counts(conn, args.panda_id)
            ranges = ranges_of_job(conn, args.panda_id, args.limit) if counts else []
        if args.status:
            wanted = set(args.status.split(","))
            ranges = [r for r in ranges if r["status"] in wanted]
        if args.json:
            from pandawms.monitor.web import to_json

            sys.stdout.write(
                to_json({"PandaID": args.panda_id, "counts": counts, "ranges": ranges}).decode() + "\n"
            )
            return 0
        if not counts:
            print(f"pandawms jobs ranges: job {args.panda_id} has no event ranges", file=sys.stderr)
            return 1
        sys.stdout.write(render_ranges(counts, ranges, paint))
        return 0

    return _run(args, body)


# --- pandawms tasks -----------------------------------------------------------------------


def render_tasks(tasks: Sequence[Mapping[str, Any]], paint: Painter, width: int) -> str:
    """One line per task: ID, user, jobs, finished and done percentages, counts by status."""
    if not tasks:
        return "no tasks\n"
    uwidth = min(max([4, *(len(str(t.get("user") or "-")) for t in tasks)]), 24)
    lines = [
        paint.bold(
            f"{'TASK':>12} {'USER':<{uwidth}} {'JOBS':>7} {'DONE%':>6} {'FAIL%':>6} {'STATUS':<9}  BY STATUS"
        )
    ]
    for t in tasks:
        total = t["total"] or 1
        failed = t["counts"].get("failed", 0) / total * 100
        by_status = "  ".join(paint.status(s, f"{s} {n}") for s, n in t["counts"].items())
        plain = "  ".join(f"{s} {n}" for s, n in t["counts"].items())
        prefix = (
            f"{t['jediTaskID']:>12} {_cut(str(t.get('user') or '-'), uwidth):<{uwidth}} {t['total']:>7} "
            f"{t['done_fraction'] * 100:>5.1f}% {failed:>5.1f}% {str(t.get('status') or '-'):<9}  "
        )
        room = width - len(prefix)
        lines.append(prefix + (by_status if len(plain) <= room else _cut(plain, room)))
    return "\n".join(lines) + "\n"


def _cmd_tasks(args: argparse.Namespace) -> int:
    from pandawms.monitor.queries.tasks import task_list

    if args.watch is not None and args.watch <= 0:
        print("pandawms tasks: --watch needs a positive number of seconds", file=sys.stderr)
        return 2

    def body(rt: Any, paint: Painter) -> int:
        def frame() -> str:
            tasks = task_list(rt, user=args.user, limit=args.limit, include_archive=args.archive)
            if args.task is not None:
                tasks = [t for t in tasks if t["jediTaskID"] == args.task]
            return render_tasks(tasks, paint, _width())

        return _watch(args.watch, frame)

    return _run(args, body)


# --- pandawms carousel ------------------------------------------------------------------------

CAROUSEL_COLOURS = {"queued": "33", "staging": "36", "done": "34", "cancelled": "90", "retired": "90"}


def render_carousel(requests: Sequence[Mapping[str, Any]], paint: Painter, width: int) -> str:
    """One line per staging request: id, status, files staged, source and destination, dataset."""
    if not requests:
        return "no staging requests\n"
    lines = [
        paint.bold(
            f"{'REQUEST':>8} {'STATUS':<9} {'FILES':>11} {'SOURCE':<20} {'DESTINATION':<20} {'STARTED':<19}  DATASET"
        )
    ]
    for r in requests:
        files = f"{r.get('staged_files') or 0}/{'-' if r.get('total_files') is None else r['total_files']}"
        status = str(r["status"])
        rest = (
            f" {files:>11} {_cut(str(r.get('source_rse') or '-'), 20):<20} "
            f"{_cut(str(r.get('destination_rse') or '-'), 20):<20} {str(r.get('start_time') or '-'):<19}  "
        )
        room = max(width - (9 + 9 + len(rest)), 20)
        shown = paint(f"{status:<9}", CAROUSEL_COLOURS.get(status, ""))
        lines.append(f"{r['request_id']:>8} {shown}{rest}{_cut(str(r['dataset']), room)}")
    return "\n".join(lines) + "\n"


def _cmd_carousel(args: argparse.Namespace) -> int:
    """``pandawms carousel [--status S] [--task ID] [--json]``: the data carousel's requests."""
    from pandawms.core.tasks.carousel import list_requests

    def body(rt: Any, paint: Painter) -> int:
        found = [
            r.as_dict() for r in list_requests(rt, status=args.status, task_id=args.task, limit=args.limit)
        ]
        if args.json:
            import json

            sys.stdout.write(json.dumps(found, indent=1) + "\n")
            return 0
        sys.stdout.write(render_carousel(found, paint, _width()))
        return 0

    return _run(args, body)


def _cmd_jobs_reassign(args: argparse.Namespace) -> int:
    """``pandawms jobs reassign PANDAID... [--site QUEUE]``."""
    return _run(args, lambda rt, _paint: cli_ops.jobs_reassign(rt, args))


def _cmd_tasks_priority(args: argparse.Namespace) -> int:
    """``pandawms tasks priority TASKID N``."""
    return _run(args, lambda rt, _paint: cli_ops.tasks_priority(rt, args))


def configure(sub: Any) -> None:
    """Add ``jobs`` (with ``show`` and ``why``) and ``tasks`` to the pandawms CLI."""
    jobs = sub.add_parser(
        "jobs",
        help="job summary by queue and status, like condor_q ('jobs show ID', 'jobs why ID')",
        description="Jobs by queue and status from the live table. 'pandawms jobs show PANDAID' prints one "
        "job with its history and errors explained; 'pandawms jobs why PANDAID' says why a waiting job "
        "has not run.",
    )
    _db_options(jobs)
    jobs.add_argument("--status", help="only these statuses (comma-separated)")
    jobs.add_argument("--queue", help="only this queue (computingSite)")
    jobs.add_argument("--task", type=int, help="only this jediTaskID")
    jobs.add_argument("--user", help="only this user (prodUserName)")
    jobs.add_argument("--archive", action="store_true", help="count archived jobs too")
    jobs.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until Ctrl-C",
    )
    jobs.set_defaults(func=_cmd_jobs)
    actions = jobs.add_subparsers(dest="jobs_action", metavar="{show,why,ranges,reassign}")
    show = actions.add_parser("show", help="one job: attributes, files, history, errors explained")
    show.add_argument("panda_id", type=int, metavar="PANDAID")
    show.add_argument("--json", action="store_true", help="print the monitor's JSON instead")
    _db_options(show, suppress=True)
    show.set_defaults(func=_cmd_show)
    why = actions.add_parser("why", help="why an activated or defined job has not run")
    why.add_argument("panda_id", type=int, metavar="PANDAID")
    why.add_argument("--json", action="store_true", help="print the analysis as JSON")
    _db_options(why, suppress=True)
    why.set_defaults(func=_cmd_why)
    ranges = actions.add_parser("ranges", help="an event-service job's event ranges and their states")
    ranges.add_argument("panda_id", type=int, metavar="PANDAID")
    ranges.add_argument("--status", help="only these range statuses (comma-separated)")
    ranges.add_argument("--limit", type=int, default=10000, help="at most this many ranges (default 10000)")
    ranges.add_argument("--json", action="store_true", help="print the ranges as JSON")
    _db_options(ranges, suppress=True)
    ranges.set_defaults(func=_cmd_ranges)
    reassign = actions.add_parser(
        "reassign", help="send jobs no pilot holds yet back to brokerage, or to a queue with --site"
    )
    reassign.add_argument("panda_ids", type=int, nargs="+", metavar="PANDAID")
    reassign.add_argument("--site", help="the queue (computingSite) to send them to")
    _db_options(reassign, suppress=True)
    reassign.set_defaults(func=_cmd_jobs_reassign)

    tasks = sub.add_parser("tasks", help="jobs grouped by jediTaskID, most recent tasks first")
    _db_options(tasks)
    tasks.add_argument("--user", help="only this user's tasks")
    tasks.add_argument("--task", type=int, help="only this jediTaskID")
    tasks.add_argument("--limit", type=int, default=50, help="how many tasks (default 50)")
    tasks.add_argument("--archive", action="store_true", help="include archived jobs")
    tasks.add_argument(
        "--watch", nargs="?", type=float, const=5.0, metavar="SECONDS", help="refresh every SECONDS"
    )
    tasks.set_defaults(func=_cmd_tasks)
    task_actions = tasks.add_subparsers(dest="tasks_action", metavar="{priority}")
    priority = task_actions.add_parser("priority", help="set a task's priority (and its queued jobs')")
    priority.add_argument("task_id", type=int, metavar="TASKID")
    priority.add_argument("priority", type=int, metavar="N")
    _db_options(priority, suppress=True)
    priority.set_defaults(func=_cmd_tasks_priority)

    carousel = sub.add_parser(
        "carousel",
        help="data carousel: requests staging task input from tape to disk, newest first",
        description="Staging requests (queued, staging, done, cancelled, retired) with their files on "
        "disk, source tape and destination RSE. Operators change them with the v1 data_carousel/* methods.",
    )
    _db_options(carousel)
    carousel.add_argument(
        "--status", choices=("queued", "staging", "done", "cancelled", "retired"), help="only this status"
    )
    carousel.add_argument("--task", type=int, help="only the requests this jediTaskID waits for")
    carousel.add_argument("--limit", type=int, default=200, help="how many requests (default 200)")
    carousel.add_argument("--json", action="store_true", help="print the requests as JSON")
    carousel.set_defaults(func=_cmd_carousel)
