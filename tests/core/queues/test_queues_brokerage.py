"""Queue definitions and brokerage, on every backend."""

from __future__ import annotations

import json

import pytest

from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs import submit
from pandawms.core.jobs.placement import broker_waiting_jobs
from pandawms.core.queues.catalogue import list_queues, load_queues, queue_document
from pandawms.core.runtime import Runtime
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.jobs import make_job

WHO = Identity(dn="/CN=Broker Tester")
QUEUES = {
    "SCORE_A": {
        "status": "online",
        "type": "unified",
        "corecount": 1,
        "maxrss": 2000,
        "maxtime": 86400,
        "state": "ACTIVE",
        "copytools": {"mv": {}},
    },
    "SCORE_B": {"status": "online", "type": "unified", "corecount": 1, "maxrss": 2000, "maxtime": 86400},
    "MCORE_8": {"status": "online", "type": "production", "corecount": 8, "maxrss": 16000, "maxtime": 172800},
    "ANALY_HIMEM": {"status": "online", "type": "analysis", "corecount": 1, "maxrss": 8000, "maxtime": 3600},
    "DOWN": {"status": "offline", "type": "unified", "corecount": 1, "maxrss": 64000},
}


def _status_site(rt: Runtime, panda_id: int) -> tuple[str, str | None, str | None]:
    job = jobs_read.get_descriptions(rt, [panda_id], include_archive=False)[0]
    assert job is not None
    return job["jobStatus"], job["computingSite"], job["brokerageErrorDiag"]


def test_load_refuses_a_bad_file_and_keeps_the_old_one(rt: Runtime) -> None:
    assert load_queues(rt, json.dumps(QUEUES)) == "5 queues: 5 new, 0 changed, 0 removed"
    bad = {**QUEUES, "SCORE_B": {"status": "sideways"}, "X": {"corecount": "many"}}
    with pytest.raises(
        PandaError, match="configuration unchanged: .*SCORE_B: status must be one of.*corecount"
    ):
        load_queues(rt, json.dumps(bad))
    with pytest.raises(PandaError, match="not valid JSON"):
        load_queues(rt, "{broken")
    assert [q.name for q in list_queues(rt, fresh=True)] == sorted(QUEUES)
    doc = queue_document(rt, "SCORE_A")
    assert doc is not None and json.loads(doc[0])["copytools"] == {"mv": {}}
    assert json.loads(doc[0])["nickname"] == "SCORE_A"
    smaller = {k: v for k, v in QUEUES.items() if k != "DOWN"}
    smaller["SCORE_A"] = {**QUEUES["SCORE_A"], "maxrss": 4000}
    assert load_queues(rt, json.dumps(smaller)) == "4 queues: 0 new, 1 changed, 1 removed"


def test_jobs_without_a_site_go_to_a_fitting_queue(rt: Runtime) -> None:
    load_queues(rt, json.dumps(QUEUES))
    answers = submit.submit_jobs(
        rt,
        [
            make_job(site=None, prodSourceLabel="managed", coreCount=8, minRamCount=12000),
            make_job(site=None, prodSourceLabel="user", minRamCount=6000, maxWalltime=1800),
            make_job(site=None, prodSourceLabel="managed", coreCount=16),
            make_job(site=None, prodSourceLabel="user"),
            make_job(site=None, prodSourceLabel="user"),
        ],
        WHO,
    )
    mcore, himem, too_big, spread1, spread2 = (a[0] for a in answers)
    assert _status_site(rt, mcore)[:2] == ("activated", "MCORE_8")
    assert _status_site(rt, himem)[:2] == ("activated", "ANALY_HIMEM")
    status, site, diag = _status_site(rt, too_big)
    assert (status, site) == ("defined", None)
    assert diag is not None and diag.startswith("no queue fits:") and "too few cores (job needs 16)" in diag
    assert {_status_site(rt, spread1)[1], _status_site(rt, spread2)[1]} == {"SCORE_A", "SCORE_B"}


def test_waiting_jobs_are_placed_when_a_queue_appears(rt: Runtime) -> None:
    (panda_id,) = (a[0] for a in submit.submit_jobs(rt, [make_job(site=None)], WHO))
    assert _status_site(rt, panda_id) == ("defined", None, "no queue fits: no queues are configured")
    assert broker_waiting_jobs(rt) == (0, 1)
    load_queues(rt, json.dumps({"NEW_Q": {"status": "online", "corecount": 1}}))
    assert broker_waiting_jobs(rt) == (1, 0)
    assert _status_site(rt, panda_id) == ("activated", "NEW_Q", None)
