"""Job counts for the ``statistics/*`` methods, in the nested shapes the real server answers.

Harvester polls the per-site counts every few minutes from every instance, and monitors poll
the others; at a million live jobs a full count on every call would cost a table scan each
time. So each answer is one GROUP BY (the per-site/status count is served from the dispatch
index, which starts with computingSite and jobStatus; final jobs of the time window come from
the archive through its modificationTime index) and is kept for :data:`CACHE_SECONDS` by the
runtime: a minute-old count is what these callers expect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Table, and_, func, not_, or_, select

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive, queues
from pandawms.model.states import TERMINAL

CACHE_SECONDS = 30.0
#: Default window of final jobs counted with the live ones (the real server's 12 hours).
DEFAULT_WINDOW_MINUTES = 12 * 60
MAX_WINDOW_MINUTES = 7 * 24 * 60

PRODUCTION_LABELS = ("managed", "ptest", "prod_test", "test", "rc_test", "rc_test2", "rc_alrb")
ANALYSIS_LABELS = ("user", "panda")
_FINAL = sorted(str(s) for s in TERMINAL)


def _cached(rt: Runtime, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()``, reused by the runtime for :data:`CACHE_SECONDS` (one computation at a time)."""
    return rt.cached(("job_stats", *key), compute, CACHE_SECONDS)


def clear_cache(rt: Runtime) -> None:
    """Forget every cached answer of ``rt`` (tests, and after bulk changes)."""
    rt.forget_kind("job_stats")


def _counts(
    conn: Connection,
    columns: Sequence[str],
    labels: Sequence[str] | None,
    floor: dt.datetime | None,
) -> list[tuple[Any, ...]]:
    """Rows of (columns..., n): live jobs not final, plus final ones modified after ``floor``."""
    out: list[tuple[Any, ...]] = []
    tables: list[Table] = [jobs] if floor is None else [jobs, jobs_archive]
    for table in tables:
        cols: list[Column[Any]] = [table.c[name] for name in columns]
        conds: list[ColumnElement[bool]] = []
        if labels is not None:
            conds.append(table.c.prodSourceLabel.in_(labels))
        if table is jobs:
            active = and_(not_(table.c.jobStatus.in_(_FINAL)), table.c.jobStatus != "merging")
            if floor is None:
                conds.append(active)
            else:
                conds.append(
                    or_(active, and_(table.c.jobStatus.in_(_FINAL), table.c.modificationTime > floor))
                )
        else:
            conds.append(table.c.modificationTime > floor)
        stmt = select(*cols, func.count()).where(*conds).group_by(*cols)
        out.extend(tuple(row) for row in conn.execute(stmt))
    return out


def _nest(rows: Iterable[tuple[Any, ...]], zero: Sequence[str]) -> dict[str, Any]:
    """``{k1: {k2: ... {status: n}}}`` from rows (k1, k2, ..., status, n), with ``zero`` states at 0."""
    out: dict[str, Any] = {}
    depth = 0
    for row in rows:
        *keys, status, n = row
        depth = len(keys)
        node = out
        for key in keys:
            node = node.setdefault(str(key) if key is not None else "NULL", {})
        node[str(status)] = node.get(str(status), 0) + int(n)

    def fill(node: dict[str, Any], level: int) -> None:
        for child in node.values():
            if level == 1:
                for state in zero:
                    child.setdefault(state, 0)
            else:
                fill(child, level - 1)

    if depth:
        fill(out, depth)
    return out


def _floor(window_minutes: int | None) -> dt.datetime:
    return utcnow() - dt.timedelta(minutes=window_minutes or DEFAULT_WINDOW_MINUTES)


def _site_clouds(conn: Connection) -> dict[str, str]:
    return {name: cloud for name, cloud in conn.execute(select(queues.c.name, queues.c.cloud)) if cloud}


def active_by_site(rt: Runtime) -> dict[str, Any]:
    """``{site: {jobStatus: n}}`` of jobs not in a final state (Harvester's get_job_stats)."""

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _counts(conn, ("computingSite", "jobStatus"), None, None)
        return _nest(rows, ("assigned", "activated", "running"))

    return _cached(rt, ("active_by_site",), compute)


def active_detailed_by_site(rt: Runtime) -> dict[str, Any]:
    """``{site: {resource_type: {prodSourceLabel: {jobStatus: n}}}}`` of jobs not final."""

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _counts(
                conn, ("computingSite", "resource_type", "prodSourceLabel", "jobStatus"), None, None
            )
        return _nest(rows, ("assigned", "activated", "running"))

    return _cached(rt, ("active_detailed_by_site",), compute)


def by_site_and_resource_type(rt: Runtime, window_minutes: int | None) -> dict[str, Any]:
    """``{site: {resource_type: {jobStatus: n}}}``, final jobs of the window included."""

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _counts(
                conn, ("computingSite", "resource_type", "jobStatus"), None, _floor(window_minutes)
            )
        return _nest(rows, ("assigned", "activated", "running", "finished", "failed"))

    return _cached(rt, ("by_site_rt", window_minutes), compute)


def by_site_share_and_resource_type(rt: Runtime, window_minutes: int | None) -> dict[str, Any]:
    """``{site: {prodSourceLabel: {resource_type: {jobStatus: n}}}}``, final jobs of the window included.

    The real server groups by global share and names each share by the prodSourceLabel it
    serves; every job here carries that label itself, so it is grouped by it directly.
    """

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _counts(
                conn,
                ("computingSite", "prodSourceLabel", "resource_type", "jobStatus"),
                None,
                _floor(window_minutes),
            )
        return _nest(rows, ("assigned", "activated", "running", "finished", "failed"))

    return _cached(rt, ("by_site_share_rt", window_minutes), compute)


def _by_cloud(conn: Connection, extra: Sequence[str], labels: Sequence[str]) -> list[tuple[Any, ...]]:
    """Counts by (cloud, *extra, jobStatus): a queue's cloud, else the job's own ``cloud``."""
    clouds = _site_clouds(conn)
    rows = _counts(conn, ("computingSite", "cloud", *extra, "jobStatus"), labels, _floor(None))
    return [(clouds.get(site) or cloud or "NULL", *rest) for site, cloud, *rest in rows]


def by_cloud(rt: Runtime, kind: str) -> dict[str, Any]:
    """``{cloud: {jobStatus: n}}`` of production or analysis jobs (live and the last 12 hours)."""
    labels = PRODUCTION_LABELS if kind == "production" else ANALYSIS_LABELS

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _by_cloud(conn, (), labels)
        return _nest(rows, ())

    return _cached(rt, ("by_cloud", kind), compute)


def production_by_cloud_and_processing_type(rt: Runtime) -> dict[str, Any]:
    """``{cloud: {processingType: {jobStatus: n}}}`` of production jobs (live and the last 12 hours)."""

    def compute() -> dict[str, Any]:
        with read_tx(rt.engine) as conn:
            rows = _by_cloud(conn, ("processingType",), PRODUCTION_LABELS)
        return _nest(rows, ())

    return _cached(rt, ("production_by_cloud_ptype",), compute)
