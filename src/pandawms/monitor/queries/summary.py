"""Whole-table counts of live jobs by queue and status, cached per process (see package docs)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    Table,
    func,
    select,
)

from pandawms.core.ops import rollup
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_monitor import monitor_live_counts
from pandawms.monitor.queries.common import (
    SNAPSHOT_MIN_JOBS,
    SNAPSHOT_STALE,
    SUMMARY_STALE,
    SUMMARY_TTL,
    status_sort_key,
)


@dataclass
class Summary:
    """Live jobs counted by (queue, status), and when that was counted."""

    counts: dict[tuple[str, str], int]
    at: dt.datetime

    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (_, status), n in self.counts.items():
            out[status] += n
        return dict(sorted(out.items(), key=lambda kv: status_sort_key(kv[0])))

    def by_queue(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (queue, status), n in self.counts.items():
            out[queue][status] = n
        return dict(sorted(out.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_live(
    conn: Connection,
    task: int | None = None,
    user: str | None = None,
    statuses: Sequence[str] = (),
    queue: str | None = None,
    table: Table = jobs,
) -> dict[tuple[str, str], int]:
    stmt = select(table.c.computingSite, table.c.jobStatus, func.count()).group_by(
        table.c.computingSite, table.c.jobStatus
    )
    if task is not None:
        stmt = stmt.where(table.c.jediTaskID == task)
    if user:
        stmt = stmt.where(table.c.prodUserName == user)
    if statuses:
        stmt = stmt.where(table.c.jobStatus.in_(list(statuses)))
    if queue:
        stmt = stmt.where(table.c.computingSite == queue)
    return {(site or "(no queue)", status): int(n) for site, status, n in conn.execute(stmt)}


def _live_snapshot(conn: Connection) -> Summary | None:
    """The rollup's live counts when they are recent and the live table is big enough to need them.

    A small table is counted directly (exact, and cheap); past :data:`SNAPSHOT_MIN_JOBS` the
    counts of the last ``monitor_rollup`` run (at most a period old) spare every worker the scan.
    """

    state = rollup.read_state(conn, rollup.LIVE_COUNTS)
    if state is None or state[1] < utcnow() - SNAPSHOT_STALE:
        return None
    table = monitor_live_counts
    counts = {
        (site or "(no queue)", status): int(n)
        for site, status, n in conn.execute(select(table.c.computingSite, table.c.jobStatus, table.c.n))
    }
    if sum(counts.values()) < SNAPSHOT_MIN_JOBS:
        return None
    return Summary(counts, state[1])


def live_summary(rt: Runtime, fresh: bool = False) -> Summary:
    """Live jobs by (queue, status), cached by the runtime (see :data:`SUMMARY_TTL`)."""

    def compute() -> Summary:
        with read_tx(rt.engine) as conn:
            snapshot = _live_snapshot(conn)
            if snapshot is not None:
                return snapshot
            return Summary(count_live(conn), utcnow())

    if fresh:
        return compute()
    return rt.cached("monitor.summary", compute, SUMMARY_TTL, SUMMARY_STALE)


def filtered_summary(
    rt: Runtime,
    task: int | None = None,
    user: str | None = None,
    statuses: Sequence[str] = (),
    queue: str | None = None,
    include_archive: bool = False,
) -> Summary:
    """Jobs by (queue, status) with filters, counted now (the terminal view)."""
    if task is None and not user and not statuses and not queue and not include_archive:
        return live_summary(rt, fresh=True)
    with read_tx(rt.engine) as conn:
        counts = count_live(conn, task, user, statuses, queue)
        if include_archive:
            for key, n in count_live(conn, task, user, statuses, queue, jobs_archive).items():
                counts[key] = counts.get(key, 0) + n
    return Summary(counts, utcnow())
