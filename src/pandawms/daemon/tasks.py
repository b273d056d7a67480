"""The tasks the daemon runs; each is a thin wrapper around a core function."""

from __future__ import annotations

import urllib.request

from pandawms.core.jobs.archive import archive_final_jobs
from pandawms.core.jobs.placement import broker_waiting_jobs
from pandawms.core.jobs.watcher import fail_stale_jobs
from pandawms.core.ops.rollup import roll_up
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.daemon.registry import task
from pandawms.messaging.publisher import publish_status_changes


@task("watcher", period=60)
def watcher(rt: Runtime) -> str:
    """Fail jobs whose pilot stopped heartbeating; close killed jobs whose pilot never answered."""
    counts = fail_stale_jobs(rt)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no stale jobs"


@task("worker_sync", period=1800)
def worker_sync(rt: Runtime) -> str:
    """Ask Harvester to kill workers whose pilot finished over an hour ago but which it still counts alive."""
    from pandawms.core.harvester.commands import sync_workers

    return f"{sync_workers(rt)} workers named in kill commands"


@task("archiver", period=300)
def archiver(rt: Runtime) -> str:
    """Move final jobs older than archive_delay from the live table to the archive."""
    return f"archived {archive_final_jobs(rt)} jobs"


@task("brokerage", period=120)
def brokerage(rt: Runtime) -> str:
    """Place defined jobs that are still waiting for a queue."""
    placed, waiting = broker_waiting_jobs(rt)
    return f"placed {placed} jobs, {waiting} still without a fitting queue"


@task("configurator", period=300)
def configurator(rt: Runtime) -> str:
    """Load queue definitions from queues_source (unchanged queues are not rewritten)."""
    source = rt.settings.queues_source
    if not source:
        return "no queues_source configured"
    if "://" in source:
        with urllib.request.urlopen(source, timeout=60) as reply:  # noqa: S310 - operator-configured source
            text = reply.read(256 * 1024 * 1024)
    else:
        with open(source, "rb") as handle:
            text = handle.read()
    return load_queues(rt, text)


@task("publisher", period=10)
def publisher(rt: Runtime) -> str:
    """Send job status changes to the message broker (when mq_url is set)."""
    if not rt.settings.mq_url:
        return "messaging off (no mq_url)"
    return f"published {publish_status_changes(rt)} status changes"


@task("monitor_rollup", period=30)
def monitor_rollup(rt: Runtime) -> str:
    """Fold status changes into the monitor's chart buckets and recount live jobs by queue."""
    return roll_up(rt)


# The task layer's own tasks register themselves on import.
from pandawms.daemon import tasks_jedi as _tasks_jedi  # noqa: E402, F401
