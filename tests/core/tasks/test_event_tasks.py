"""Event-service tasks on every backend: consumers share each job set's ranges, a lost consumer
loses only its own ranges, a merge job follows, and the task ends done counting events."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

from sqlalchemy import select, update

from pandawms.api.pilot_codec import job_for_pilot
from pandawms.core.events import dispatch as events_dispatch
from pandawms.core.events import release
from pandawms.core.events import update as events_update
from pandawms.core.events.store import task_event_counts as event_progress
from pandawms.core.jobs.dispatch import DispatchRequest, acquire_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.runtime import Runtime
from pandawms.core.tasks import changes as task_changes
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks import read as tasks_read
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.schema import jobs
from pandawms.model.identity import Identity
from pandawms.monitor.queries.why import why_not_running
from tests.core.tasks.test_tasks import JANE, QUEUE, _queue, prun_params


def _es_params(**extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"nEvents": 40, "nEventsPerJob": 20, "nEventsPerRange": 5, "nEsConsumers": 2}
    values.update(extra)
    return prun_params("user.jdoe.es1/", **values)


def _take(rt: Runtime, n: int = 100, label: str = "user") -> list[dict[str, Any]]:
    return acquire_jobs(rt, DispatchRequest(site=QUEUE, n_jobs=n, prod_source_label=label), JANE)


def _finish(rt: Runtime, job: dict[str, Any], state: str = "finished") -> None:
    update_job(rt, PilotUpdate(job["PandaID"], "running", job["attemptNr"]))
    report = {
        f["lfn"]: {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"}
        for f in job["Files"]
        if f["type"] != "input"
    }
    update_job(rt, PilotUpdate(job["PandaID"], state, job["attemptNr"], report=json.dumps(report)))


def _done(rt: Runtime, ranges: list[dict[str, Any]]) -> list[Any]:
    reports = [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in ranges]
    return events_update.update_ranges(rt, reports, JANE).returns


def test_an_event_service_task_runs_to_done_with_its_merge_jobs(rt: Runtime) -> None:
    _queue(rt)
    reply = tasks.submit_task(rt, _es_params(), JANE)
    assert reply.success, reply
    task_id = reply.data
    consumers = _take(rt)
    assert len(consumers) == 4 and {j["eventService"] for j in consumers} == {1}
    jobsets: dict[int, list[dict[str, Any]]] = {}
    for job in consumers:
        jobsets.setdefault(job["jobsetID"], []).append(job)
    assert sorted(len(v) for v in jobsets.values()) == [2, 2]
    assert all(min(j["PandaID"] for j in v) == k for k, v in jobsets.items())
    (a1, a2), (b1, b2) = (sorted(v, key=lambda j: j["PandaID"]) for _k, v in sorted(jobsets.items()))
    with rt.engine.connect() as conn:
        assert event_progress(conn, task_id) == {"nEventsReady": 40, "nEvents": 40}

    # job set A: two consumers share the four ranges
    got_a1 = events_dispatch.acquire_ranges(rt, a1["PandaID"], 2, JANE)
    got_a2 = events_dispatch.acquire_ranges(rt, a2["PandaID"], 5, JANE)
    assert [(r["startEvent"], r["lastEvent"]) for r in got_a1 + got_a2] == [
        (0, 4),
        (5, 9),
        (10, 14),
        (15, 19),
    ]
    assert _done(rt, got_a1 + got_a2) == [True] * 4
    # job set B: b1 takes two ranges and is lost; b2 finishes its own, then b1's once they return
    lost = events_dispatch.acquire_ranges(rt, b1["PandaID"], 2, JANE)
    own = events_dispatch.acquire_ranges(rt, b2["PandaID"], 5, JANE)
    assert [r["startEvent"] for r in lost] == [20, 25] and [r["startEvent"] for r in own] == [30, 35]
    _finish(rt, b1, "failed")  # the watcher failed it after its heartbeat stopped
    assert release.release_lost(rt) == (2, 0)
    assert _done(rt, own) == [True, True]
    again = events_dispatch.acquire_ranges(rt, b2["PandaID"], 5, JANE)
    assert [r["startEvent"] for r in again] == [20, 25] and all(
        r["eventRangeID"].endswith("-2") for r in again
    )
    assert _done(rt, again) == [True, True]
    assert _done(rt, lost) == [False, False]  # the lost consumer's late word counts for nothing
    for job in (a1, a2, b2):
        _finish(rt, job)

    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "running"
    merges = _take(rt)
    assert len(merges) == 2 and {j["eventService"] for j in merges} == {2}
    assert sorted(j["jobsetID"] for j in merges) == sorted(jobsets)
    assert all(f["type"] == "log" for j in merges for f in j["Files"])
    with rt.engine.connect() as conn:
        assert event_progress(conn, task_id) == {"nEventsFinished": 40, "nEvents": 40}
        n_events = dict(
            conn.execute(select(jobs.c.PandaID, jobs.c.nEvents).where(jobs.c.eventService == 1)).all()
        )
    assert n_events[b2["PandaID"]] == 20 and n_events[a1["PandaID"]] == 10
    for job in merges:
        _finish(rt, job)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"
    files = tasks_read.datasets_and_files(rt, task_id, ["pseudo_input"], False)
    assert [f["status"] for f in files[0]["files"]] == ["finished", "finished"]


def test_a_job_set_whose_consumers_all_died_gets_a_new_one(rt: Runtime) -> None:
    _queue(rt)
    task_id = tasks.submit_task(rt, _es_params(nEvents=10, nEventsPerJob=10, nEsConsumers=1), JANE).data
    (consumer,) = _take(rt)
    events_dispatch.acquire_ranges(rt, consumer["PandaID"], 1, JANE)
    _finish(rt, consumer, "failed")
    manage_tasks(rt)  # held ranges first go back to the pool
    assert _take(rt) == []
    release.release_lost(rt)
    manage_tasks(rt)
    (second,) = _take(rt)
    assert second["jobsetID"] == consumer["jobsetID"] and second["eventService"] == 1
    got = events_dispatch.acquire_ranges(rt, second["PandaID"], 10, JANE)
    assert [r["startEvent"] for r in got] == [0, 5]
    assert _done(rt, got) == [True, True]
    _finish(rt, second)
    manage_tasks(rt)
    (merge,) = _take(rt)
    assert merge["eventService"] == 2
    _finish(rt, merge)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"


def test_fatal_ranges_fail_the_file_without_a_merge(rt: Runtime) -> None:
    _queue(rt)
    task_id = tasks.submit_task(rt, _es_params(nEvents=10, nEventsPerJob=10, nEsConsumers=1), JANE).data
    (consumer,) = _take(rt)
    got = events_dispatch.acquire_ranges(rt, consumer["PandaID"], 10, JANE)
    reports = [{"eventRangeID": got[0]["eventRangeID"], "eventStatus": "fatal"}]
    assert events_update.update_ranges(rt, reports, JANE).returns == [True]
    assert _done(rt, got[1:]) == [True]
    _finish(rt, consumer)
    manage_tasks(rt)
    assert _take(rt) == []
    assert tasks_read.get_status(rt, task_id) == "failed"


def test_event_service_parameters_are_checked(rt: Runtime) -> None:
    _queue(rt)
    cases = {
        "nEvents": _es_params(nEvents=None, nJobs=2),
        "nEsConsumers": _es_params(nEsConsumers=1000),
        "nEventsPerFile": _es_params(noInput=None, nEvents=None, pfnList=["root://a/f1"]),
        "esmergeSpec": _es_params(esmergeSpec="merge"),
    }
    for name, params in cases.items():
        reply = tasks.submit_task(rt, params, JANE)
        assert not reply.success and f"task parameter {name}" in reply.message, (name, reply)


def test_jumbo_jobs_take_ranges_from_every_job_set(rt: Runtime) -> None:
    boss = Identity(dn="/DC=org/CN=Boss", method="x509", roles=frozenset({"production"}))
    _queue(rt)
    plain = tasks.submit_task(rt, prun_params("user.jdoe.plain/"), JANE).data
    refused = task_changes.enable_jumbo_jobs(rt, plain, boss, 1, None)
    assert refused.success and "does not use the event service" in refused.message
    task_id = tasks.submit_task(rt, _es_params(nEsConsumers=1), JANE).data
    consumers = [j for j in _take(rt) if j["jediTaskID"] == task_id]
    assert len(consumers) == 2
    enabled = task_changes.enable_jumbo_jobs(rt, task_id, boss, 1, None)
    assert (
        enabled.success
        and enabled.message == f"jumbo jobs enabled for jediTaskID={task_id} (at most 1 at a time)"
    )
    manage_tasks(rt)
    jumbo = [j for j in _take(rt) if j["jediTaskID"] == task_id]
    assert [j["eventService"] for j in jumbo] == [4]
    got = events_dispatch.acquire_ranges(rt, jumbo[0]["PandaID"], 100, JANE)
    assert len(got) == 8 and len({r["eventRangeID"].split("-")[2] for r in got}) == 2  # both job sets' files
    assert all(events_dispatch.acquire_ranges(rt, c["PandaID"], 5, JANE) == [] for c in consumers)
    assert _done(rt, got) == [True] * 8
    # every range finished: the merge jobs come at once, and no second jumbo job (nothing waits)
    manage_tasks(rt)
    merges = _take(rt)
    assert sorted((m["eventService"], m["jobsetID"]) for m in merges) == sorted(
        (2, c["jobsetID"]) for c in consumers
    )
    for job in [*consumers, *jumbo, *merges]:
        _finish(rt, job)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"


BOSS = Identity(dn="/DC=org/CN=Boss", method="x509", roles=frozenset({"production"}))


def _status(rt: Runtime, panda_id: int) -> str:
    with rt.engine.connect() as conn:
        return str(conn.execute(select(jobs.c.jobStatus).where(jobs.c.PandaID == panda_id)).scalar_one())


def _co_jumbo_task(db_url: str, make_runtime: Any, total: int = 1) -> tuple[Runtime, int, dict[str, Any]]:
    """A task of two job sets: the first gets a plain consumer, then jumbo jobs are enabled."""
    rt = make_runtime(db_url, task_jobs_per_pass=1)
    _queue(rt)
    task_id = tasks.submit_task(rt, _es_params(nEsConsumers=1), JANE).data
    (first,) = _take(rt)  # one job per pass: the first job set only
    assert first["eventService"] == 1
    assert task_changes.enable_jumbo_jobs(rt, task_id, BOSS, total, None).success
    return rt, task_id, first


def test_co_jumbo_jobs_wait_while_jumbo_jobs_drain_the_ranges(db_url: str, make_runtime: Any) -> None:
    rt, task_id, first = _co_jumbo_task(db_url, make_runtime)
    manage_tasks(rt)
    (jumbo,) = _take(rt)  # the co-jumbo consumer of the second job set is held back
    assert jumbo["eventService"] == 4
    assert job_for_pilot(jumbo)["eventService"] == "True"
    with rt.engine.connect() as conn:
        (co_jumbo,) = conn.execute(
            select(jobs.c.PandaID, jobs.c.jobStatus, jobs.c.jobsetID).where(jobs.c.eventService == 5)
        ).all()
    assert co_jumbo.jobStatus == "waiting" and co_jumbo.jobsetID != first["jobsetID"]
    assert any("co-jumbo job" in r for r in why_not_running(rt, co_jumbo.PandaID)["reasons"])
    manage_tasks(rt)
    assert _take(rt) == [] and _status(rt, co_jumbo.PandaID) == "waiting"
    # a mix of consumers: the plain consumer and the jumbo job share the ranges, none twice
    mine = events_dispatch.acquire_ranges(rt, first["PandaID"], 2, JANE)
    rest = events_dispatch.acquire_ranges(rt, jumbo["PandaID"], 100, JANE)
    assert [r["startEvent"] for r in mine] == [0, 5]
    assert [r["startEvent"] for r in rest] == [10, 15, 20, 25, 30, 35]
    assert events_dispatch.acquire_ranges(rt, first["PandaID"], 100, JANE) == []
    assert _done(rt, mine + rest) == [True] * 8
    # every range done: the waiting co-jumbo job is closed, never dispatched; the merges follow
    manage_tasks(rt)
    assert _status(rt, co_jumbo.PandaID) == "closed"
    merges = _take(rt)
    assert sorted(m["eventService"] for m in merges) == [2, 2]
    for job in [first, jumbo, *merges]:
        _finish(rt, job)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"
    with rt.engine.connect() as conn:
        assert event_progress(conn, task_id) == {"nEventsFinished": 40, "nEvents": 40}


def test_co_jumbo_jobs_are_released_when_jumbo_jobs_are_switched_off(db_url: str, make_runtime: Any) -> None:
    rt, task_id, _first = _co_jumbo_task(db_url, make_runtime)
    manage_tasks(rt)
    (jumbo,) = _take(rt)
    got = events_dispatch.acquire_ranges(rt, jumbo["PandaID"], 5, JANE)  # part of both job sets
    assert _done(rt, got) == [True] * 5
    off = task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 0, None)
    assert off.success and "disabled" in off.message
    assert tasks_read.get_status(rt, task_id) == "running"
    _finish(rt, jumbo)
    manage_tasks(rt)
    # no new jumbo job: the co-jumbo job now runs, and the first job set (done) has its merge
    made = {j["eventService"]: j for j in _take(rt)}
    assert sorted(made) == [2, 5] and made[2]["jobsetID"] == _first["jobsetID"]
    released = made[5]
    left = events_dispatch.acquire_ranges(rt, released["PandaID"], 100, JANE)
    assert [r["startEvent"] for r in left] == [25, 30, 35]


def test_a_co_jumbo_job_runs_after_waiting_too_long(db_url: str, make_runtime: Any) -> None:
    rt, _task_id, _first = _co_jumbo_task(db_url, make_runtime)
    manage_tasks(rt)
    (jumbo,) = _take(rt)
    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=7)
    with rt.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.eventService == 5).values(creationTime=long_ago))
    manage_tasks(rt)
    (released,) = _take(rt)  # the jumbo job is alive, but the co-jumbo job waited six hours
    assert released["eventService"] == 5 and jumbo["eventService"] == 4


def test_jumbo_co_jumbo_and_plain_consumers_never_share_a_range(db_url: str, make_runtime: Any) -> None:
    rt = make_runtime(db_url, task_jobs_per_pass=1)
    _queue(rt)
    params = _es_params(nEvents=400, nEventsPerJob=200, nEventsPerRange=5, nEsConsumers=1)
    task_id = tasks.submit_task(rt, params, JANE).data
    (plain,) = _take(rt)
    assert task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 2, None).success
    manage_tasks(rt)
    jumbo = _take(rt)
    assert [j["eventService"] for j in jumbo] == [4, 4]
    assert task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 0, None).success
    manage_tasks(rt)  # switched off: the waiting co-jumbo job is released; the jumbo jobs go on
    (co_jumbo,) = _take(rt)
    assert co_jumbo["eventService"] == 5
    taken: dict[int, list[str]] = {}

    def consume(job: dict[str, Any]) -> None:
        mine = taken.setdefault(job["PandaID"], [])
        while got := events_dispatch.acquire_ranges(rt, job["PandaID"], 3, JANE):
            mine.extend(r["eventRangeID"].rsplit("-", 1)[0].split("-", 2)[2] for r in got)
            assert _done(rt, got) == [True] * len(got)

    threads = [threading.Thread(target=consume, args=(j,)) for j in (plain, co_jumbo, *jumbo)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [r for ids in taken.values() for r in ids]
    assert len(every) == len(set(every)) == 80  # each range once, whoever took it
    with rt.engine.connect() as conn:
        assert event_progress(conn, task_id) == {"nEventsFinished": 400, "nEvents": 400}
    manage_tasks(rt)
    merges = _take(rt)
    assert sorted(m["eventService"] for m in merges) == [2, 2]
    for job in [plain, co_jumbo, *jumbo, *merges]:
        _finish(rt, job)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "done"


def test_killing_a_task_cancels_its_waiting_co_jumbo_jobs(db_url: str, make_runtime: Any) -> None:
    rt, task_id, first = _co_jumbo_task(db_url, make_runtime)
    manage_tasks(rt)
    (jumbo,) = _take(rt)
    with rt.engine.connect() as conn:
        co_jumbo = conn.execute(select(jobs.c.PandaID).where(jobs.c.eventService == 5)).scalar_one()
    assert tasks.kill_task(rt, task_id, JANE).success
    manage_tasks(rt)
    assert _status(rt, co_jumbo) == "cancelled"
    for job in (first, jumbo):
        _finish(rt, job, "failed")
    release.release_lost(rt)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "aborted"
    assert _take(rt) == []


def test_jumbo_jobs_per_site_are_limited(db_url: str, make_runtime: Any) -> None:
    rt = make_runtime(db_url)
    _queue(rt)
    task_id = tasks.submit_task(rt, _es_params(nEsConsumers=1), JANE).data
    assert len(_take(rt)) == 2
    refused = task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 100_001, None)
    assert not refused.success and "jumbo_jobs_total" in refused.message
    assert task_changes.enable_jumbo_jobs(rt, task_id, BOSS, 5, 2).success
    manage_tasks(rt)
    jumbo = _take(rt)
    assert [j["eventService"] for j in jumbo] == [4, 4]  # five wanted, one queue, two per queue
    manage_tasks(rt)
    assert _take(rt) == []
    _finish(rt, jumbo[0], "failed")
    manage_tasks(rt)
    assert [j["eventService"] for j in _take(rt)] == [4]  # a free place on the queue is refilled


def test_killing_an_event_service_task_cancels_its_ranges(rt: Runtime) -> None:
    _queue(rt)
    task_id = tasks.submit_task(rt, _es_params(nEvents=10, nEventsPerJob=10, nEsConsumers=1), JANE).data
    (consumer,) = _take(rt)
    events_dispatch.acquire_ranges(rt, consumer["PandaID"], 1, JANE)
    assert tasks.kill_task(rt, task_id, JANE).success
    _finish(rt, consumer, "failed")  # the pilot heard the kill and ended
    release.release_lost(rt)
    manage_tasks(rt)
    assert tasks_read.get_status(rt, task_id) == "aborted"
    with rt.engine.connect() as conn:
        assert event_progress(conn, task_id) == {"nEventsCancelled": 10, "nEvents": 10}
    assert events_dispatch.acquire_ranges(rt, consumer["PandaID"], 1, JANE) == []
