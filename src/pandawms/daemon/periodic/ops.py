"""Periodic server bookkeeping: queue definitions, the message publisher, the monitor's rollup and
the asynchronous requests operators send to each machine."""

from __future__ import annotations

import urllib.request

from pandawms.core.ops.async_processor import run_pending
from pandawms.core.ops.rollup import roll_up
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.daemon.registry import PeriodicSet
from pandawms.messaging.publisher import publish_status_changes

periodic = PeriodicSet()


@periodic.task("configurator", period=300)
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


@periodic.task("publisher", period=10)
def publisher(rt: Runtime) -> str:
    """Send job status changes to the message broker (when mq_url is set)."""
    if not rt.settings.mq_url:
        return "messaging off (no mq_url)"
    return f"published {publish_status_changes(rt)} status changes"


@periodic.task("monitor_rollup", period=30)
def monitor_rollup(rt: Runtime) -> str:
    """Fold status changes into the monitor's chart buckets and recount live jobs by queue."""
    return roll_up(rt)


@periodic.task("async_requests", period=10, fleet_wide=False)
def async_request_processor(rt: Runtime) -> str:
    """Run the asynchronous requests (log grep, probes) addressed to this machine."""
    return f"ran {run_pending(rt)} requests"
