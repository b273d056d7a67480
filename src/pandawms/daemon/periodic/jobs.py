"""Periodic work on jobs: the watcher, the archiver, the brokerage's retry of waiting jobs and the
return of lost consumers' event ranges."""

from __future__ import annotations

from pandawms.core.events.release import release_lost
from pandawms.core.jobs.archive import archive_final_jobs
from pandawms.core.jobs.placement import broker_waiting_jobs
from pandawms.core.jobs.watcher import fail_stale_jobs
from pandawms.core.runtime import Runtime
from pandawms.daemon.registry import PeriodicSet

periodic = PeriodicSet()


@periodic.task("watcher", period=60)
def watcher(rt: Runtime) -> str:
    """Fail jobs whose pilot stopped heartbeating; close killed jobs whose pilot never answered."""
    counts = fail_stale_jobs(rt)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no stale jobs"


@periodic.task("archiver", period=300)
def archiver(rt: Runtime) -> str:
    """Move final jobs older than archive_delay from the live table to the archive."""
    return f"archived {archive_final_jobs(rt)} jobs"


@periodic.task("brokerage", period=120)
def brokerage(rt: Runtime) -> str:
    """Place defined jobs that are still waiting for a queue."""
    placed, waiting = broker_waiting_jobs(rt)
    return f"placed {placed} jobs, {waiting} still without a fitting queue"


@periodic.task("event_ranges", period=60)
def event_ranges(rt: Runtime) -> str:
    """Return the event ranges of lost consumers to their pool (fatal at their attempt limit)."""
    returned, fatal = release_lost(rt)
    return f"{returned} event ranges back in their pool, {fatal} fatal"
