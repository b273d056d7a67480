"""Periodic work for Harvester: killing workers whose pilot is long gone."""

from __future__ import annotations

from pandawms.core.harvester.commands import sync_workers
from pandawms.core.runtime import Runtime
from pandawms.daemon.registry import PeriodicSet

periodic = PeriodicSet()


@periodic.task("worker_sync", period=1800)
def worker_sync(rt: Runtime) -> str:
    """Ask Harvester to kill workers whose pilot finished over an hour ago but which it still counts alive."""
    return f"{sync_workers(rt)} workers named in kill commands"
