"""The tasks the daemon runs; each is a thin wrapper around a core function."""

from __future__ import annotations

from pandawms.core.archive import archive_final_jobs
from pandawms.core.runtime import Runtime
from pandawms.core.watcher import fail_stale_jobs
from pandawms.daemon.registry import task


@task("watcher", period=60)
def watcher(rt: Runtime) -> str:
    """Fail jobs whose pilot stopped heartbeating; close killed jobs whose pilot never answered."""
    counts = fail_stale_jobs(rt)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no stale jobs"


@task("archiver", period=300)
def archiver(rt: Runtime) -> str:
    """Move final jobs older than archive_delay from the live table to the archive."""
    return f"archived {archive_final_jobs(rt)} jobs"
