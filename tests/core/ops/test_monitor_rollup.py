"""The monitor's rollup on every backend: the chart and the live counts it serves match a scan."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from pandawms.core.jobs import dispatch, submit
from pandawms.core.ops import rollup
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import job_status_log
from pandawms.db.schema_monitor import monitor_rollup_state
from pandawms.model.identity import Identity
from pandawms.monitor.queries import summary as summary_q
from pandawms.monitor.queries import timeline as timeline_q
from tests.jobs import make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")


def _scanned(rt: Runtime, hours: int, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, int]]:
    """The chart counted straight from the status log (the path without a rollup)."""
    with monkeypatch.context() as m:
        m.setattr(timeline_q, "ROLLUP_STALE", dt.timedelta(days=-1))
        timeline_q.closed_buckets(rt).clear()
        return [dict(c) for c in timeline_q.timeline(rt, hours).counts]


def _history(rt: Runtime, n_jobs: int) -> None:
    """Older status changes spread over the last day (some on bucket edges), then real ones now.

    Written in time order, as the server writes them: ids grow with time.
    """
    now = utcnow().replace(microsecond=0)
    rows = []
    for i in reversed(range(300)):
        when = now - dt.timedelta(minutes=5 * i + 3, seconds=0 if i % 5 else 17)
        if i % 11 == 0:
            when = when.replace(minute=when.minute - when.minute % 5, second=0)  # exactly on an edge
        rows.append(
            {
                "PandaID": 1 + i % n_jobs,
                "modificationTime": when,
                "jobStatus": ("running", "finished", "failed", "sent")[i % 4],
                "computingSite": "TEST_SITE",
            }
        )
    with write_tx(rt.engine) as conn:
        conn.execute(job_status_log.insert(), rows)
    submit.submit_jobs(rt, [make_job(jobName=f"r{i}") for i in range(n_jobs)], ALICE)
    dispatch.acquire_jobs(rt, dispatch.DispatchRequest(site="TEST_SITE", n_jobs=3, node="wn1"), ALICE)


def test_chart_from_rollup_equals_a_scan(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(rt, 5)
    assert "folded" in rollup.roll_up(rt)
    with rt.engine.connect() as conn:
        cursor = conn.execute(
            select(monitor_rollup_state.c.lastLogID).where(monitor_rollup_state.c.name == "status_log")
        ).scalar()
        newest = conn.execute(select(func.max(job_status_log.c.id))).scalar()
    # Rows of the last two minutes are left to the pages; the chart still shows them.
    assert cursor is not None and cursor < newest
    for hours in (1, 6, 24):
        timeline_q.closed_buckets(rt).clear()
        rolled = [dict(c) for c in timeline_q.timeline(rt, hours).counts]
        assert rolled == _scanned(rt, hours, monkeypatch), hours
        assert sum(sum(c.values()) for c in rolled) > 0
    # A second run folds nothing twice.
    rollup.roll_up(rt)
    assert [dict(c) for c in timeline_q.timeline(rt, 24).counts] == _scanned(rt, 24, monkeypatch)


def test_live_counts_snapshot_for_big_tables(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    submit.submit_jobs(rt, [make_job(jobName=f"s{i}") for i in range(4)], ALICE)
    counted = summary_q.live_summary(rt, fresh=True).counts
    assert counted == {("TEST_SITE", "activated"): 4}
    rollup.roll_up(rt)
    monkeypatch.setattr(summary_q, "SNAPSHOT_MIN_JOBS", 1)
    snap = summary_q.live_summary(rt, fresh=True)
    assert snap.counts == counted
    # The snapshot is as of the rollup's run: a new job shows after the next run.
    submit.submit_jobs(rt, [make_job(jobName="late")], ALICE)
    assert summary_q.live_summary(rt, fresh=True).counts == counted
    rollup.roll_up(rt)
    assert summary_q.live_summary(rt, fresh=True).counts == {("TEST_SITE", "activated"): 5}
    # Small tables are counted directly (exact), whatever the snapshot says.
    monkeypatch.setattr(summary_q, "SNAPSHOT_MIN_JOBS", 100)
    submit.submit_jobs(rt, [make_job(jobName="later")], ALICE)
    assert summary_q.live_summary(rt, fresh=True).counts == {("TEST_SITE", "activated"): 6}
