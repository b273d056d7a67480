"""Periodic work of the task layer: the task manager, the data carousel, and the sandbox and
worker-log cleaner."""

from __future__ import annotations

from pandawms.core.harvester.logs import expire as expire_logs
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import checkpoints
from pandawms.core.tasks.carousel import run_carousel
from pandawms.core.tasks.outputs import process_outbox, watch_rules
from pandawms.core.tasks.progress import manage_tasks
from pandawms.core.tasks.sandbox import expire
from pandawms.daemon.registry import PeriodicSet

periodic = PeriodicSet()


@periodic.task("task_manager", period=20)
def task_manager(rt: Runtime) -> str:
    """Follow task jobs, retry failed files, make new jobs and end tasks whose work is over."""
    counts = manage_tasks(rt)
    if not counts:
        return "no active tasks"
    made = counts.pop("jobs", 0)
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{made} jobs made; tasks: {states}"


@periodic.task("data_carousel", period=60)
def data_carousel(rt: Runtime) -> str:
    """Stage input that is only on tape: rules to disk for queued requests, files released as they arrive."""
    counts = run_carousel(rt)
    if not counts:
        return "no staging requests"
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))


@periodic.task("ddm_outbox", period=10)
def ddm_outbox(rt: Runtime) -> str:
    """Register finished jobs' outputs in the data management system and close ended tasks'
    datasets (the outbox; retried with back-off while it is unavailable)."""
    if not rt.settings.ddm_rucio_host:
        return "no data management system configured"
    counts = process_outbox(rt)
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing due"


@periodic.task("ddm_rules", period=60)
def ddm_rules(rt: Runtime) -> str:
    """Finish transferring jobs whose outputs reached the destination the task asked for."""
    if not rt.settings.ddm_rucio_host:
        return "no data management system configured"
    counts = watch_rules(rt)
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no job waits for a rule"


@periodic.task("cache_cleaner", period=3600)
def cache_cleaner(rt: Runtime) -> str:
    """Delete sandbox files unused for cache_lifetime that no active task refers to, and worker
    logs Harvester has not added to for as long, and HPO checkpoints nobody replaced for as long."""
    files, logs, points = expire(rt), expire_logs(rt), checkpoints.expire(rt)
    return f"removed {files} cached files, {logs} worker logs and {points} HPO checkpoints"
