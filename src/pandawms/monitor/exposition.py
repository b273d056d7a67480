"""The /metrics page: request metrics from every worker plus what the database says.

Request counters and latency histograms come from :mod:`pandawms.monitor.metrics` (summed over
the httpd's processes). Job counts by status and queue and daemon task runs are the same for
every process, so they are read from the database, cached for a few seconds by the runtime so that
several Prometheus servers scraping every few seconds cost one cheap query; a database outage
turns into ``pandawms_db_up 0`` instead of a failed scrape.
"""

from __future__ import annotations

import calendar
import logging

from sqlalchemy.exc import DBAPIError, OperationalError

from pandawms import __version__
from pandawms.core.runtime import Runtime
from pandawms.monitor.metrics import Registry, _label, request_lines
from pandawms.monitor.queries import daemon as daemon_q
from pandawms.monitor.queries import summary as summary_q

log = logging.getLogger("pandawms.monitor")

#: Seconds the database-derived metrics are reused.
DB_METRICS_TTL = 10.0


def _db_lines(rt: Runtime) -> list[str]:
    summary = summary_q.live_summary(rt)
    lines = [
        "# HELP pandawms_jobs Live jobs (jobs table) by status and queue.",
        "# TYPE pandawms_jobs gauge",
    ]
    for (queue, status), n in sorted(summary.counts.items()):
        lines.append(f'pandawms_jobs{{status="{_label(status)}",queue="{_label(queue)}"}} {n}')
    totals = rt.cached("monitor.daemon_totals", lambda: daemon_q.daemon_run_totals(rt), DB_METRICS_TTL)
    last = rt.cached("monitor.daemon_last", lambda: daemon_q.daemon_last_runs(rt), DB_METRICS_TTL)
    lines += [
        "# HELP pandawms_daemon_task_runs_total Finished daemon task runs by task and outcome (ok, failed, timeout, stopped).",
        "# TYPE pandawms_daemon_task_runs_total counter",
    ]
    failures: dict[str, int] = {}
    for (task, outcome), n in sorted(totals.items()):
        lines.append(
            f'pandawms_daemon_task_runs_total{{task="{_label(task)}",outcome="{_label(outcome)}"}} {n}'
        )
        failures.setdefault(task, 0)
        if outcome != "ok":
            failures[task] += n
    lines += [
        "# HELP pandawms_daemon_task_failures_total Daemon task runs that did not end ok.",
        "# TYPE pandawms_daemon_task_failures_total counter",
    ]
    for task, n in sorted(failures.items()):
        lines.append(f'pandawms_daemon_task_failures_total{{task="{_label(task)}"}} {n}')
    lines += [
        "# HELP pandawms_daemon_task_last_run_timestamp_seconds Start of each task's newest run (Unix time).",
        "# TYPE pandawms_daemon_task_last_run_timestamp_seconds gauge",
    ]
    for task, (started, _outcome) in sorted(last.items()):
        if started is not None:
            lines.append(
                f'pandawms_daemon_task_last_run_timestamp_seconds{{task="{_label(task)}"}} '
                f"{calendar.timegm(started.utctimetuple()) + started.microsecond / 1e6:.3f}"
            )
    lines += [
        "# HELP pandawms_daemon_task_last_run_ok 1 when the task's newest run ended ok (or is running).",
        "# TYPE pandawms_daemon_task_last_run_ok gauge",
    ]
    for task, (_started, last_outcome) in sorted(last.items()):
        lines.append(
            f'pandawms_daemon_task_last_run_ok{{task="{_label(task)}"}} {1 if last_outcome in ("ok", "running") else 0}'
        )
    return lines


def exposition(rt: Runtime, registry: Registry) -> str:
    """The whole /metrics text: ``registry``'s request metrics and what ``rt``'s database says."""
    lines = [
        "# HELP pandawms_build_info The running pandawms version.",
        "# TYPE pandawms_build_info gauge",
        f'pandawms_build_info{{version="{_label(__version__)}"}} 1',
    ]
    lines += request_lines(registry)
    try:
        db_lines = _db_lines(rt)
        up = 1
    except (OperationalError, DBAPIError) as exc:
        log.error("metrics: database error: %s", exc)
        db_lines, up = [], 0
    lines += [
        "# HELP pandawms_db_up 1 when the database answered the metrics queries.",
        "# TYPE pandawms_db_up gauge",
        f"pandawms_db_up {up}",
        *db_lines,
    ]
    return "\n".join(lines) + "\n"
