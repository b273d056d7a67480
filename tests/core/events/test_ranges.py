"""Event ranges on every backend: made, claimed once, reported, failed to fatal, returned when lost."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from pandawms.core.events import dispatch as events_dispatch
from pandawms.core.events import release, store
from pandawms.core.events import update as events_update
from pandawms.core.jobs import dispatch, submit
from pandawms.core.runtime import Runtime
from pandawms.db.engine import write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_events import event_ranges
from pandawms.model.errors import Forbidden, PandaError, TooLarge
from pandawms.model.identity import Identity
from tests.jobs import make_job

PILOT = Identity(dn="/DC=org/CN=pilot one", method="x509", roles=frozenset({"pilot"}))
OTHER_PILOT = Identity(dn="/DC=org/CN=pilot two", method="x509", roles=frozenset({"pilot"}))
PROD = Identity(dn="/DC=org/CN=production", method="x509", roles=frozenset({"production", "pilot"}))
TASK = 77


def _consumers(rt: Runtime, n: int, jobset: int = 5000, **attrs: Any) -> list[int]:
    """``n`` event-service consumer jobs of one job set, dispatched to PILOT."""
    raw = [
        make_job(prodSourceLabel="managed", eventService=1, jobsetID=jobset, jobName=f"es{i}", **attrs)
        for i in range(n)
    ]
    ids = [a[0] for a in submit.submit_jobs(rt, raw, PROD)]
    req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=n, prod_source_label="managed", node="wn")
    got = [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, PILOT)]
    assert sorted(got) == sorted(ids)
    return ids


def _pool(
    rt: Runtime, jobset: int = 5000, events: int = 100, per_range: int = 10, max_attempt: int = 3
) -> int:
    files = [
        store.InputFile(file_id=11, lfn="EVNT.01._000001.pool.root.1", first_event=0, last_event=events - 1)
    ]
    with write_tx(rt.engine) as conn:
        return store.create_ranges(conn, TASK, jobset, files, per_range, max_attempt)


def _rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(select(event_ranges).order_by(event_ranges.c.rangeID)).mappings()
        ]


def _report(rt: Runtime, ranges: list[dict[str, Any]], status: str, who: Identity = PILOT) -> list[Any]:
    reports = [{"eventRangeID": r["eventRangeID"], "eventStatus": status} for r in ranges]
    return events_update.update_ranges(rt, reports, who).returns


def test_split_covers_every_event_once() -> None:
    assert store.split(0, 24, 10) == [(0, 9), (10, 19), (20, 24)]
    assert store.split(5, 5, 3) == [(5, 5)]
    with pytest.raises(PandaError):
        store.split(0, 10, 0)


def test_claims_hand_out_disjoint_ranges_until_the_pool_is_empty(rt: Runtime) -> None:
    (a, b) = _consumers(rt, 2)
    assert _pool(rt) == 10
    first = events_dispatch.acquire_ranges(rt, a, 4, PILOT)
    second = events_dispatch.acquire_ranges(rt, b, 4, PILOT)
    rest = events_dispatch.acquire_ranges(rt, a, 100, PILOT)
    ids = [r["eventRangeID"] for r in first + second + rest]
    assert len(ids) == len(set(ids)) == 10
    assert first[0] == {
        "eventRangeID": f"{TASK}-{a}-11-1-1",
        "startEvent": 0,
        "lastEvent": 9,
        "LFN": "EVNT.01._000001.pool.root.1",
        "GUID": None,
        "scope": None,
    }
    assert all(r["eventRangeID"].split("-")[1] == str(b) for r in second)
    assert events_dispatch.acquire_ranges(rt, b, 4, PILOT) == []
    assert store.available_for(rt, a, -1, -1) == 0
    assert {r["status"] for r in _rows(rt)} == {"sent"}


def test_no_ranges_for_jobs_that_do_not_consume(rt: Runtime) -> None:
    (plain,) = [
        a[0] for a in submit.submit_jobs(rt, [make_job(prodSourceLabel="managed", jobsetID=5000)], PILOT)
    ]
    _pool(rt)
    # activated, not dispatched: nothing
    assert events_dispatch.acquire_ranges(rt, plain, 5, PILOT) == []
    dispatch.acquire_jobs(rt, dispatch.DispatchRequest(site="TEST_SITE", prod_source_label="managed"), PILOT)
    # dispatched but not an event-service job: nothing
    assert events_dispatch.acquire_ranges(rt, plain, 5, PILOT) == []
    assert events_dispatch.acquire_ranges(rt, 987654, 5, PILOT) == []
    with pytest.raises(TooLarge):
        events_dispatch.acquire_ranges(rt, plain, 10_001, PILOT)
    assert store.available_for(rt, plain, -1, -1) == 0
    assert store.available_for(rt, -1, 5000, TASK) == 10


def test_killed_consumer_gets_nothing(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt)
    with write_tx(rt.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.PandaID == a).values(commandToPilot="tobekilled"))
    assert events_dispatch.acquire_ranges(rt, a, 5, PILOT) == []


def test_reports_apply_only_to_the_range_as_held(rt: Runtime) -> None:
    (a, b) = _consumers(rt, 2)
    _pool(rt)
    got = events_dispatch.acquire_ranges(rt, a, 3, PILOT)
    assert _report(rt, got[:1], "running") == [None]
    assert _report(rt, got[:2], "finished") == [True, True]
    # a second report of the same range, or one under another job's name, matches nothing
    assert _report(rt, got[:1], "finished") == [False]
    forged = [{"eventRangeID": got[2]["eventRangeID"].replace(f"-{a}-", f"-{b}-")}]
    assert _report(rt, forged, "finished") == [False]
    stale = [{"eventRangeID": got[2]["eventRangeID"][:-1] + "9"}]
    assert _report(rt, stale, "finished") == [False]
    out = events_update.update_ranges(
        rt,
        [
            {"eventRangeID": "nonsense", "eventStatus": "finished"},
            "x",
            {"eventRangeID": got[2]["eventRangeID"]},
        ],
        PILOT,
    )
    assert out.returns == [False, False, False]
    assert _report(rt, [{"eventRangeID": f"{TASK}-99999999-11-3-1"}], "finished") == [False]
    with rt.engine.connect() as conn:
        n_events = conn.execute(select(jobs.c.nEvents).where(jobs.c.PandaID == a)).scalar_one()
    assert n_events == 20
    statuses = store.statuses_for(rt, [(TASK, a)], PILOT)[a]
    assert {k: v["status"] for k, v in statuses.items()} == {
        got[0]["eventRangeID"]: "finished",
        got[1]["eventRangeID"]: "finished",
        got[2]["eventRangeID"]: "sent",
    }


def test_failed_ranges_return_until_the_attempt_limit_then_fatal(rt: Runtime) -> None:
    (a, b) = _consumers(rt, 2)
    _pool(rt, events=10, per_range=10, max_attempt=2)
    (one,) = events_dispatch.acquire_ranges(rt, a, 5, PILOT)
    assert _report(rt, [one], "failed") == [True]
    assert _rows(rt)[0]["status"] == "failed" and _rows(rt)[0]["failedAttempt"] == 1
    (again,) = events_dispatch.acquire_ranges(rt, b, 5, PILOT)
    assert again["eventRangeID"] == f"{TASK}-{b}-11-1-2"
    assert _report(rt, [again], "failed") == [True]
    row = _rows(rt)[0]
    assert row["status"] == "fatal" and row["failedAttempt"] == 2
    assert events_dispatch.acquire_ranges(rt, a, 5, PILOT) == []


def test_fatal_report_ends_the_range_at_once(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt, events=10)
    (one,) = events_dispatch.acquire_ranges(rt, a, 5, PILOT)
    out = events_update.update_ranges(
        rt,
        [
            {
                "eventRangeID": one["eventRangeID"],
                "eventStatus": "fatal",
                "errorCode": "1220",
                "errorDiag": "x" * 900,
            }
        ],
        PILOT,
    )
    assert out.returns == [True]
    row = _rows(rt)[0]
    assert row["status"] == "fatal" and row["errorCode"] == 1220 and len(row["errorDiag"]) == 500


def test_version_one_chunks_carry_their_zip_file(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt, events=20)
    got = events_dispatch.acquire_ranges(rt, a, 2, PILOT)
    chunks = [
        {
            "zipFile": {
                "numEvents": 2,
                "objstoreID": 1234,
                "lfn": "EventService_premerge_1.tar",
                "fsize": 10,
                "pathConvention": 1000,
            },
            "eventRanges": [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in got],
        }
    ]
    reports = events_update.flatten(chunks, 1)
    assert events_update.update_ranges(rt, reports, PILOT).returns == [True, True]
    assert {
        (r["zipLFN"], r["objstoreID"], r["pathConvention"]) for r in _rows(rt) if r["status"] == "finished"
    } == {("EventService_premerge_1.tar", "1234", 1000)}
    with pytest.raises(PandaError):
        events_update.flatten({"not": "a list"}, 0)


def test_lost_consumer_ranges_return_to_the_pool_and_others_finish_them(rt: Runtime) -> None:
    (a, b) = _consumers(rt, 2)
    _pool(rt, events=40, per_range=10, max_attempt=2)
    held_by_a = events_dispatch.acquire_ranges(rt, a, 2, PILOT)
    held_by_b = events_dispatch.acquire_ranges(rt, b, 1, PILOT)
    assert _report(rt, held_by_a[:1], "finished") == [True]
    # the watcher failed a after its heartbeat stopped
    with write_tx(rt.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.PandaID == a).values(jobStatus="failed"))
    assert release.release_lost(rt) == (1, 0)
    rows = {r["job_processID"]: r for r in _rows(rt)}
    assert rows[1]["status"] == "finished"  # what a finished stays finished
    assert rows[2]["status"] == "ready" and rows[2]["PandaID"] is None and rows[2]["failedAttempt"] == 1
    assert rows[3]["status"] == "sent" and rows[3]["PandaID"] == b  # b's range untouched
    # a's late report on the range it lost is refused
    assert _report(rt, held_by_a[1:], "finished") == [False]
    taken = events_dispatch.acquire_ranges(rt, b, 10, PILOT)
    assert sorted(r["startEvent"] for r in taken) == [10, 30]
    assert _report(rt, taken + held_by_b, "finished") == [True, True, True]
    assert {r["status"] for r in _rows(rt)} == {"finished"}
    # a range lost at its attempt limit is fatal
    assert release.release_lost(rt) == (0, 0)


def test_lost_at_the_attempt_limit_is_fatal(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt, events=10, max_attempt=1)
    events_dispatch.acquire_ranges(rt, a, 1, PILOT)
    with write_tx(rt.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.PandaID == a).values(jobStatus="failed"))
    assert release.release_lost(rt) == (0, 1)
    assert _rows(rt)[0]["status"] == "fatal"


def test_cancelling_a_task_cancels_its_open_ranges(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt, events=30)
    got = events_dispatch.acquire_ranges(rt, a, 1, PILOT)
    _report(rt, got, "finished")
    assert release.cancel_task_ranges(rt, TASK) == 2
    assert sorted(r["status"] for r in _rows(rt)) == ["cancelled", "cancelled", "finished"]


def test_strict_mode_binds_ranges_to_the_credential_that_took_the_job(db_url: str, make_runtime: Any) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    (a,) = _consumers(rt, 1)
    _pool(rt, events=20)
    with pytest.raises(Forbidden):
        events_dispatch.acquire_ranges(rt, a, 1, OTHER_PILOT)
    got = events_dispatch.acquire_ranges(rt, a, 1, PILOT)
    assert _report(rt, got, "finished", who=OTHER_PILOT) == [False]
    assert _report(rt, got, "finished") == [True]
    user = Identity(dn="/DC=org/CN=Mallory", method="x509", roles=frozenset({"user"}))
    with pytest.raises(Forbidden):
        store.statuses_for(rt, [(TASK, a)], user)
    assert list(store.statuses_for(rt, [(TASK, a)], PROD)[a].values())[0]["status"] == "finished"


def test_wild_numbers_in_a_report_are_dropped_on_every_backend(rt: Runtime) -> None:
    (a,) = _consumers(rt, 1)
    _pool(rt, events=20)
    got = events_dispatch.acquire_ranges(rt, a, 2, PILOT)
    wild = {
        "errorCode": 10**30,
        "coreCount": "-99999999999",
        "cpuConsumptionTime": "nan",
        "objstoreID": "o" * 300,
    }
    out = events_update.update_ranges(
        rt, [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished", **wild} for r in got], PILOT
    )
    assert out.returns == [True, True]
    row = _rows(rt)[0]
    assert (row["errorCode"], row["coreCount"], row["cpuConsumptionTime"], len(row["objstoreID"])) == (
        None,
        None,
        None,
        64,
    )
