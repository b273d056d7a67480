"""Job counts for the statistics methods: shapes, states, windows and clouds, on every backend."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import update

from pandawms.core.jobs import dispatch, submit
from pandawms.core.jobs import stats as job_stats
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.model.identity import Identity
from tests.jobs import make_job

WHO = Identity(dn="/CN=Stats Tester", remote_host="10.0.0.9", roles=frozenset({"user", "production"}))


def _jobs(rt: Runtime) -> list[int]:
    load_queues(
        rt,
        json.dumps(
            {
                "SITE_A": {"status": "online", "cloud": "US"},
                "SITE_B": {"status": "online", "cloud": "DE"},
            }
        ),
    )
    specs = [
        make_job(site="SITE_A", prodSourceLabel="managed", resource_type="SCORE", processingType="simul"),
        make_job(site="SITE_A", prodSourceLabel="managed", resource_type="SCORE", processingType="simul"),
        make_job(site="SITE_A", prodSourceLabel="managed", resource_type="MCORE", processingType="reco"),
        make_job(site="SITE_B", prodSourceLabel="user", resource_type="SCORE"),
        make_job(site="SITE_B", prodSourceLabel="user", resource_type="SCORE"),
    ]
    ids = [a[0] for a in submit.submit_jobs(rt, specs, WHO)]
    dispatch.acquire_jobs(rt, dispatch.DispatchRequest("SITE_A", n_jobs=1, prod_source_label="managed"), WHO)
    now = utcnow()
    with write_tx(rt.engine) as conn:
        # one user job finished a minute ago, one two days ago (outside every default window)
        conn.execute(
            update(jobs).where(jobs.c.PandaID == ids[3]).values(jobStatus="finished", modificationTime=now)
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.PandaID == ids[4])
            .values(jobStatus="failed", modificationTime=now - dt.timedelta(days=2))
        )
    job_stats.clear_cache(rt)
    return ids


def test_active_counts_by_site_leave_final_jobs_out(rt: Runtime) -> None:
    _jobs(rt)
    assert job_stats.active_by_site(rt) == {
        "SITE_A": {"activated": 2, "sent": 1, "assigned": 0, "running": 0},
    }
    detailed = job_stats.active_detailed_by_site(rt)
    assert (
        detailed["SITE_A"]["SCORE"]["managed"]["activated"]
        + detailed["SITE_A"]["SCORE"]["managed"].get("sent", 0)
        == 2
    )
    assert detailed["SITE_A"]["MCORE"]["managed"]["running"] == 0


def test_windows_count_recent_final_jobs(rt: Runtime) -> None:
    _jobs(rt)
    by_rt = job_stats.by_site_and_resource_type(rt, None)
    assert by_rt["SITE_B"] == {
        "SCORE": {"finished": 1, "assigned": 0, "activated": 0, "running": 0, "failed": 0}
    }
    assert job_stats.by_site_and_resource_type(rt, 3 * 24 * 60)["SITE_B"]["SCORE"]["failed"] == 1
    share = job_stats.by_site_share_and_resource_type(rt, None)
    assert share["SITE_B"]["user"]["SCORE"]["finished"] == 1
    assert sum(share["SITE_A"]["managed"]["SCORE"].values()) == 2


def test_counts_by_cloud_use_the_queue_cloud(rt: Runtime) -> None:
    _jobs(rt)
    assert job_stats.by_cloud(rt, "production") == {"US": {"activated": 2, "sent": 1}}
    assert job_stats.by_cloud(rt, "analysis") == {"DE": {"finished": 1}}
    by_type = job_stats.production_by_cloud_and_processing_type(rt)
    assert by_type["US"]["reco"] == {"activated": 1} or by_type["US"]["reco"] == {"sent": 1}
    assert sum(by_type["US"]["simul"].values()) == 2


def test_answers_are_cached_for_a_short_while(rt: Runtime) -> None:
    ids = _jobs(rt)
    first = job_stats.active_by_site(rt)
    with write_tx(rt.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.PandaID == ids[0]).values(jobStatus="running"))
    assert job_stats.active_by_site(rt) == first
    job_stats.clear_cache(rt)
    assert job_stats.active_by_site(rt)["SITE_A"]["running"] >= 1
