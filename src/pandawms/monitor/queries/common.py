"""Shared pieces of the monitor's read models: status order, list columns, cache lifetimes."""

from __future__ import annotations

import datetime as dt

from pandawms.monitor.codes import ERROR_COLUMNS

#: Statuses in the order a job lives through them (tables and charts use this order).
STATUS_ORDER: tuple[str, ...] = (
    "pending",
    "defined",
    "assigned",
    "waiting",
    "throttled",
    "activated",
    "sent",
    "starting",
    "running",
    "holding",
    "merging",
    "transferring",
    "finished",
    "failed",
    "cancelled",
    "closed",
)
#: Statuses a job reaches through its pilot; their modification times are pilot activity.
PILOT_SEEN: tuple[str, ...] = ("sent", "starting", "running", "holding", "transferring", "finished", "failed")
WAITING: frozenset[str] = frozenset({"pending", "defined", "assigned", "waiting", "throttled", "activated"})

#: Columns of a job list row.
LIST_COLUMNS: tuple[str, ...] = (
    "PandaID",
    "jobStatus",
    "computingSite",
    "prodUserName",
    "jediTaskID",
    "jobName",
    "prodSourceLabel",
    "currentPriority",
    "attemptNr",
    "creationTime",
    "modificationTime",
    *ERROR_COLUMNS,
)

#: Seconds a whole-table count is served without asking again; and how long a stale one may
#: still be served while it is refreshed in the background (both by the runtime's cache,
#: ``Runtime.cached``: two runtimes in one process never share an answer).
SUMMARY_TTL = 10.0
SUMMARY_STALE = 600.0
#: Live tables at least this big are summarised from the rollup's counts (see _live_snapshot),
#: as long as those are younger than SNAPSHOT_STALE; chart buckets come from the rollup while
#: its cursor moved within ROLLUP_STALE.
SNAPSHOT_MIN_JOBS = 100_000
SNAPSHOT_STALE = dt.timedelta(minutes=3)
ROLLUP_STALE = dt.timedelta(minutes=10)
#: Newest rows looked at first when paging (common filters match among them).
PROBE_ROWS = 20000
#: Time buckets closer to now than this are recounted: late commits may still land in them.
BUCKET_GRACE = dt.timedelta(seconds=120)
#: Bucket sizes the chart may use, seconds.
BUCKET_SIZES = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def status_sort_key(status: str) -> tuple[int, str]:
    """Lifecycle order, unknown statuses last."""
    try:
        return STATUS_ORDER.index(status), status
    except ValueError:
        return len(STATUS_ORDER), status
