"""Harvester bookkeeping in the core: workers and their jobs, statistics, commands; every backend."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import func, select, update

from pandawms.core.harvester import commands as harvester_commands
from pandawms.core.harvester import instances as harvester
from pandawms.core.harvester import workers
from pandawms.core.jobs import dispatch, heartbeat, kill, submit
from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.schema_workers import harvester_rel_jobs_workers, harvester_workers
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.jobs import make_job

WHO = Identity(dn="/CN=Harvester Tester", remote_host="10.0.0.9")
HID = "hv-test"


def _running_jobs(rt: Runtime, count: int) -> list[int]:
    ids = [
        a[0] for a in submit.submit_jobs(rt, [make_job(prodSourceLabel="managed") for _ in range(count)], WHO)
    ]
    dispatch.acquire_jobs(
        rt, dispatch.DispatchRequest("TEST_SITE", n_jobs=count, prod_source_label="managed"), WHO
    )
    for panda_id in ids:
        heartbeat.update_job(rt, PilotUpdate(panda_id, "running", 0))
    return ids


def _worker(worker_id: int, status: str = "running", **extra: object) -> dict[str, object]:
    return {
        "workerID": worker_id,
        "batchID": f"b{worker_id}",
        "queueName": "TEST_SITE",
        "status": status,
        "computingSite": "TEST_SITE",
        "resourceType": "SCORE",
        "nCore": 1,
        "submitTime": "datetime/2026-11-24 10:00:00.123456",
        **extra,
    }


def _rows(rt: Runtime) -> dict[int, dict]:
    with rt.engine.connect() as conn:
        return {r["workerID"]: dict(r) for r in conn.execute(select(harvester_workers)).mappings()}


def _links(rt: Runtime) -> set[tuple[int, int]]:
    with rt.engine.connect() as conn:
        return {
            (int(r[0]), int(r[1]))
            for r in conn.execute(
                select(harvester_rel_jobs_workers.c.workerID, harvester_rel_jobs_workers.c.PandaID)
            )
        }


def test_workers_are_upserted_and_linked_to_jobs(rt: Runtime) -> None:
    a, b, c = _running_jobs(rt, 3)
    assert workers.current_worker_id(rt, HID) is None
    assert workers.update_workers(rt, HID, [_worker(7, "submitted", pandaid_list=[a]), _worker(9)]) == [
        True,
        True,
    ]
    rows = _rows(rt)
    assert rows[7]["status"] == "submitted" and rows[7]["submitTime"] == dt.datetime(
        2026, 11, 24, 10, 0, 0, 123456
    )
    assert rows[9]["resourceType"] == "SCORE" and rows[9]["batchID"] == "b9"
    assert _links(rt) == {(7, a)}
    # a later report replaces the job list and keeps what it does not mention
    workers.update_workers(rt, HID, [{"workerID": 7, "status": "running", "pandaid_list": [b, c]}])
    assert _links(rt) == {(7, b), (7, c)}
    assert _rows(rt)[7]["batchID"] == "b7" and _rows(rt)[7]["status"] == "running"
    assert workers.current_worker_id(rt, HID) == 9
    assert workers.current_worker_id(rt, "other") is None
    assert [w["workerID"] for w in workers.workers_of_job(rt, b)] == [7]


def test_a_bad_report_is_refused_whole(rt: Runtime) -> None:
    with pytest.raises(PandaError, match="workerID 5: status must be one of"):
        workers.update_workers(rt, HID, [_worker(4), _worker(5, "exploded")])
    with pytest.raises(PandaError, match="worker 1: workerID is required"):
        workers.update_workers(rt, HID, [_worker(4), {"status": "running"}])
    with pytest.raises(PandaError, match="nCore must be an integer"):
        workers.update_workers(rt, HID, [_worker(4, nCore="lots")])
    with pytest.raises(PandaError, match="submitTime is not a time"):
        workers.update_workers(rt, HID, [_worker(4, submitTime="datetime/yesterday")])
    with pytest.raises(PandaError, match="nCore is out of range"):
        workers.update_workers(rt, HID, [_worker(4, nCore=2**40)])
    with pytest.raises(PandaError, match="appears twice"):
        workers.update_workers(rt, HID, [_worker(4), _worker(4)])
    with pytest.raises(PandaError, match="harvester_id"):
        workers.update_workers(rt, "", [_worker(4)])
    assert _rows(rt) == {}


def test_an_ended_worker_fails_its_running_job_and_keeps_its_status(rt: Runtime) -> None:
    sure, unsure = _running_jobs(rt, 2)
    workers.update_workers(rt, HID, [_worker(1, pandaid_list=[sure]), _worker(2, pandaid_list=[unsure])])
    workers.update_workers(
        rt,
        HID,
        [
            {"workerID": 1, "status": "failed", "syncLevel": 1, "errorCode": 8, "diagMessage": "evicted"},
            {"workerID": 2, "status": "finished"},
        ],
    )
    found = {
        j["PandaID"]: j for j in jobs_read.get_descriptions(rt, [sure, unsure], include_archive=True) if j
    }
    assert found[sure]["jobStatus"] == "failed"
    assert found[sure]["taskBufferErrorCode"] == 300
    assert found[sure]["taskBufferErrorDiag"] == "The worker was failed while the job was running : evicted"
    assert found[sure]["supErrorCode"] == 8 and found[sure]["supErrorDiag"] == "Diag from worker : evicted"
    assert found[unsure]["jobStatus"] == "running"  # without syncLevel 1 the pilot may still report
    # a late "running" does not revive an ended worker
    workers.update_workers(rt, HID, [{"workerID": 1, "status": "running"}])
    assert _rows(rt)[1]["status"] == "failed"


def test_killing_a_job_queues_one_kill_command_for_its_workers(rt: Runtime) -> None:
    a, b = _running_jobs(rt, 2)
    workers.update_workers(
        rt,
        HID,
        [
            _worker(11, pandaid_list=[a]),
            _worker(12, pandaid_list=[a]),
            _worker(13, "finished", pandaid_list=[a]),
        ],
    )
    workers.update_workers(rt, "hv-other", [_worker(5, pandaid_list=[a])])
    assert kill.kill_jobs(rt, [a], WHO) == [True]
    assert kill.kill_jobs(rt, [a], WHO) == [True]  # already tobekilled: no second command
    assert kill.kill_jobs(rt, [b], WHO) == [True]  # no workers: no command
    got = harvester_commands.acquire(rt, HID, 10)
    assert [(c["command"], c["params"], c["ack_requested"]) for c in got] == [
        ("SYNC_WORKERS_KILL", [11, 12], True)
    ]
    assert dt.datetime.fromisoformat(got[0]["creation_date"]) <= utcnow()
    assert harvester_commands.acquire(rt, HID, 10) == []  # handed out once
    assert [c["params"] for c in harvester_commands.acquire(rt, "hv-other", 10)] == [[5]]
    assert [c["status"] for c in harvester_commands.pending(rt, HID)] == ["retrieved"]
    assert harvester_commands.acknowledge(rt, [got[0]["command_id"]]) == 1
    assert harvester_commands.pending(rt, HID) == []
    with pytest.raises(PandaError, match="n_commands"):
        harvester_commands.acquire(rt, HID, 0)


def test_concurrent_polls_never_share_a_command(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        for number in range(40):
            harvester_commands.queue_command(
                conn, HID, "SYNC_WORKERS_KILL", [number], ack_requested=number % 2 == 0
            )
    taken: list[list[int]] = []
    lock = threading.Lock()

    def poll() -> None:
        for _ in range(10):
            got = [c["params"][0] for c in harvester_commands.acquire(rt, HID, 3)]
            with lock:
                taken.append(got)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [n for batch in taken for n in batch]
    assert sorted(flat) == list(range(40)), "a command was handed out twice or lost"
    # the ones without acknowledgement are gone already; the others wait for it
    waiting = [json.loads(c["params"])[0] for c in harvester_commands.pending(rt, HID)]
    assert sorted(waiting) == list(range(0, 40, 2))


def test_heartbeat_and_worker_statistics(rt: Runtime) -> None:
    assert (
        harvester.heartbeat(
            rt, HID, WHO, {"startTime": "datetime/2026-11-24 09:00:00.000000", "sw_version": "0.6.1"}
        )
        is False
    )
    assert harvester.heartbeat(rt, HID, WHO, {"commands": [{"command": "REPORT_WORKER_STATS"}]}) is True
    row = harvester.instance(rt, HID)
    assert row is not None and row["owner"] == "Harvester Tester" and row["hostName"] == "10.0.0.9"
    assert row["startTime"] == dt.datetime(2026, 11, 24, 9) and row["sw_version"] == "0.6.1"
    assert "REPORT_WORKER_STATS" in (row["attributes"] or "")
    with pytest.raises(PandaError, match="startTime is not a time"):
        harvester.heartbeat(rt, HID, WHO, {"startTime": "soon"})

    first = '{"managed": {"SCORE": {"running": 3, "submitted": 1}, "Undefined": {"running": 9}}}'
    assert harvester.report_stats(rt, HID, "Q1", first) == 2
    harvester.report_stats(rt, "hv-b", "Q1", {"user": {"MCORE": {"running": 2}}})
    harvester.report_stats(rt, HID, "Q2", '{"managed": {"SCORE": {"idle": 4}}}')
    assert harvester.worker_stats(rt) == {
        "Q1": {
            HID: {"managed": {"SCORE": {"running": 3, "submitted": 1}}},
            "hv-b": {"user": {"MCORE": {"running": 2}}},
        },
        "Q2": {HID: {"managed": {"SCORE": {"idle": 4}}}},
    }
    harvester.report_stats(rt, HID, "Q1", '{"managed": {"SCORE": {"running": 1}}}')  # replaces, not adds
    assert harvester.worker_stats(rt)["Q1"][HID] == {"managed": {"SCORE": {"running": 1}}}
    assert harvester.worker_stats(rt, now=utcnow() + dt.timedelta(hours=5)) == {}
    for bad, message in (
        ("{nope", "not valid JSON"),
        ('{"managed": {"SCORE": {"running": -1}}}', "non-negative integer"),
        ('{"managed": ["SCORE"]}', "must be an object"),
    ):
        with pytest.raises(PandaError, match=message):
            harvester.report_stats(rt, HID, "Q1", bad)
    assert harvester.worker_stats(rt)["Q1"][HID] == {"managed": {"SCORE": {"running": 1}}}


def test_dispatch_to_a_worker_and_pilot_status(rt: Runtime) -> None:
    (panda_id,) = [a[0] for a in submit.submit_jobs(rt, [make_job(prodSourceLabel="managed")], WHO)]
    found = dispatch.acquire_jobs(rt, dispatch.DispatchRequest("TEST_SITE", prod_source_label="managed"), WHO)
    workers.record_dispatch(rt, HID, 77, "TEST_SITE", [j["PandaID"] for j in found])
    assert _links(rt) == {(77, panda_id)}
    assert _rows(rt)[77]["status"] == "running"
    assert workers.set_pilot_status(rt, HID, 77, "started", "wn-3") is True
    assert workers.set_pilot_status(rt, HID, 78, "finished") is False
    row = _rows(rt)[77]
    assert row["pilotStatus"] == "running" and row["nodeID"] == "wn-3" and row["pilotStartTime"] is not None
    with pytest.raises(PandaError, match="started or finished"):
        workers.set_pilot_status(rt, HID, 77, "resting")
    with rt.engine.begin() as conn:
        conn.execute(update(harvester_workers).values(status="finished"))
        assert conn.execute(select(func.count()).select_from(harvester_workers)).scalar_one() == 1
    assert kill.kill_jobs(rt, [panda_id], WHO) == [True]
    assert harvester_commands.pending(rt) == []  # the worker had ended: nothing to kill


def test_the_watcher_says_when_the_worker_of_a_silent_job_had_ended(rt: Runtime) -> None:
    from pandawms.core.jobs.watcher import fail_stale_jobs
    from pandawms.db.schema import jobs

    ended, running = _running_jobs(rt, 2)
    workers.update_workers(rt, HID, [_worker(1, pandaid_list=[ended]), _worker(2, pandaid_list=[running])])
    workers.update_workers(
        rt,
        HID,
        [
            {
                "workerID": 1,
                "status": "finished",
                "endTime": "datetime/2026-11-24 11:00:00.000000",
                "diagMessage": "done",
            }
        ],
    )
    with rt.engine.begin() as conn:
        conn.execute(update(jobs).values(modificationTime=utcnow() - dt.timedelta(hours=3)))
    assert fail_stale_jobs(rt)["failed"] == 2
    found = {
        j["PandaID"]: j for j in jobs_read.get_descriptions(rt, [ended, running], include_archive=True) if j
    }
    assert found[ended]["jobDispatcherErrorCode"] == 100
    assert found[ended]["supErrorCode"] == 2
    assert found[ended]["supErrorDiag"] == "worker already finished at 2026-11-24 11:00:00 with done"
    assert not found[running]["supErrorCode"]


def test_worker_sync_names_workers_whose_pilot_ended_long_ago(rt: Runtime) -> None:
    workers.update_workers(rt, HID, [_worker(n) for n in (1, 2, 3)] + [_worker(4, "finished")])
    for number in (1, 2, 4):
        workers.set_pilot_status(rt, HID, number, "finished")
    with rt.engine.begin() as conn:
        conn.execute(
            update(harvester_workers)
            .where(harvester_workers.c.workerID.in_((1, 4)))
            .values(pilotEndTime=utcnow() - dt.timedelta(hours=2))
        )
    # 1: pilot ended 2 h ago, Harvester says running -> named; 2: ended just now -> Harvester may
    # still notice; 3: pilot never said; 4: Harvester knows it ended
    assert harvester_commands.sync_workers(rt) == 1
    assert harvester_commands.sync_workers(rt) == 0  # not named again within the retry period
    got = harvester_commands.acquire(rt, HID, 10)
    assert [(c["command"], c["params"], c["ack_requested"]) for c in got] == [
        ("SYNC_WORKERS_KILL", [1], False)
    ]
    assert harvester_commands.pending(rt, HID) == []  # no acknowledgement asked: gone once handed out
    assert harvester_commands.sync_workers(rt, now=utcnow() + dt.timedelta(minutes=31)) == 1


def test_nul_characters_are_kept_readable_or_refused(rt: Runtime) -> None:
    """PostgreSQL cannot store NUL: free text keeps it as U+FFFD, names with it are refused."""
    from pandawms.core.harvester import reports as harvester_reports

    workers.update_workers(rt, HID, [_worker(1, diagMessage="node\x00lost", batchID="b\x001")])
    assert (_rows(rt)[1]["diagMessage"], _rows(rt)[1]["batchID"]) == ("node\ufffdlost", "b\ufffd1")
    with pytest.raises(PandaError, match="harvester_id contains a NUL"):
        workers.update_workers(rt, "hv\x00", [_worker(2)])
    with pytest.raises(PandaError, match="contains a NUL"):
        harvester.report_stats(rt, HID, "Q1", {"managed": {"SC\x00ORE": {"running": 1}}})
    with pytest.raises(PandaError, match="panda_queue contains a NUL"):
        harvester.report_stats(rt, HID, "Q\x001", {})
    harvester.heartbeat(rt, HID, WHO, {"sw_version": "0.6\x00", "other": "x\x00y"})
    row = harvester.instance(rt, HID)
    assert row is not None and row["sw_version"] == "0.6\ufffd"
    assert harvester_reports.add_metrics(rt, HID, [["2026-11-24 10:00:00.0", "h\x00", '{"a": "\x00"}']]) == 1
    dialog = {
        "diagID": 3,
        "moduleName": "m\x00",
        "creationTime": "2026-11-24 10:00:00",
        "diagMessage": "x\x00",
    }
    assert harvester_reports.add_dialogs(rt, HID, [dialog]) == 1
    assert workers.set_pilot_status(rt, HID, 1, "started", "wn\x00") is True
    assert _rows(rt)[1]["nodeID"] == "wn\ufffd"
