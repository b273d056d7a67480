"""Bad input to the event-service calls: a clear refusal (HTTP status and message), never a
changed range, and lists bounded in size."""

from __future__ import annotations

import json

import httpx

from pandawms.config import load_settings
from pandawms.core.events import store
from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_events import event_ranges
from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

JSON = {"Accept": "application/json"}


def test_bad_event_calls_are_refused_and_change_nothing(sqlite_server: ServerProcess) -> None:
    base = sqlite_server.base
    job = make_job(prodSourceLabel="managed", eventService=1, jobsetID=99)
    submitted = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(job)])}).json()
    (panda_id,) = [a[0] for a in submitted["data"]]
    got = httpx.post(
        base + "/server/panda/getJob",
        headers=JSON,
        data={"siteName": "TEST_SITE", "prodSourceLabel": "managed"},
    )
    assert got.json()["PandaID"] == panda_id
    rt = Runtime.from_settings(load_settings(None, {"db_url": sqlite_server.db_url}))
    try:
        with write_tx(rt.engine) as conn:
            store.create_ranges(conn, 5, 99, [store.InputFile(1, "f.root", 0, 9)], 5)

        def post(method: str, **data: object) -> httpx.Response:
            return httpx.post(f"{base}/server/panda/{method}", headers=JSON, data=data, timeout=30)

        def v1(method: str, body: dict[str, object]) -> httpx.Response:
            return httpx.post(f"{base}/api/v1/event/{method}", json=body, timeout=30)

        assert post("getEventRanges").json()["errorDialog"] == "pandaID is required"
        assert "nRanges" in post("getEventRanges", pandaID=panda_id, nRanges="many").json()["errorDialog"]
        too_many = post("getEventRanges", pandaID=panda_id, nRanges=10_001)
        assert too_many.status_code == 413 and "at most 10000" in too_many.json()["errorDialog"]
        assert (
            post("updateEventRanges", eventRanges="{not json").json()["errorDialog"]
            == "eventRanges is not valid JSON"
        )
        assert (
            post("updateEventRanges", eventRanges='{"a": 1}').json()["errorDialog"]
            == "eventRanges must be a JSON list"
        )
        assert "version" in post("updateEventRanges", eventRanges="[]", version=7).json()["errorDialog"]
        flood = json.dumps([{"eventRangeID": "1-2-3-4-5", "eventStatus": "finished"}] * 20_001)
        assert post("updateEventRanges", eventRanges=flood).status_code == 413
        odd = [
            {"eventRangeID": "5-1-1-1-1; DROP TABLE event_ranges", "eventStatus": "finished"},
            {"eventRangeID": 12, "eventStatus": "finished"},
            {"eventRangeID": "9" * 30 + "-1-1-1-1", "eventStatus": "finished"},
            {"eventRangeID": f"5-{panda_id}-1-1-0", "eventStatus": "done"},
            {"eventStatus": "finished"},
        ]
        assert post("updateEventRanges", eventRanges=json.dumps(odd)).json()["Returns"] == [False] * 5
        assert (
            post("updateEventRange", eventRangeID="x")
            .json()["errorDialog"]
            .startswith("eventRangeID and eventStatus")
        )

        acquire = v1("acquire_event_ranges", {"job_id": panda_id, "n_ranges": 10_001})
        assert acquire.status_code == 413 and acquire.json()["success"] is False
        bad_version = v1("update_event_ranges", {"event_ranges": "[]", "version": 3})
        assert bad_version.json()["success"] is False and "version 3" in bad_version.json()["message"]
        statuses = httpx.get(
            base + "/api/v1/event/get_event_range_statuses", params={"job_task_ids": '{"a": 1}'}
        )
        assert statuses.json()["success"] is False and "must be a JSON list" in statuses.json()["message"]
        many = json.dumps([{"task_id": 5, "job_id": i} for i in range(1001)])
        assert httpx.get(
            base + "/api/v1/event/get_event_range_statuses", params={"job_task_ids": many}
        ).status_code in (413, 414)
        with read_tx(rt.engine) as conn:
            rows = conn.execute(event_ranges.select()).mappings().all()
        assert [(r["status"], r["attemptNr"]) for r in rows] == [("ready", 0), ("ready", 0)]
        # out-of-range numbers in a report are dropped, the report itself applies
        (one,) = post("getEventRanges", pandaID=panda_id, nRanges=1).json()["eventRanges"]
        wild = [
            {
                "eventRangeID": one["eventRangeID"],
                "eventStatus": "failed",
                "errorCode": 10**30,
                "coreCount": "-99999999999",
                "cpuConsumptionTime": "1e400",
                "errorDiag": "x" * 10_000,
            }
        ]
        assert post("updateEventRanges", eventRanges=json.dumps(wild)).json()["Returns"] == [True]
        single = post(
            "updateEventRange",
            eventRangeID=one["eventRangeID"],
            eventStatus="finished",
            cpuConsumptionTime="nan",
        )
        assert single.json()["StatusCode"] == 30  # it failed already: no longer held
        with read_tx(rt.engine) as conn:
            row = conn.execute(event_ranges.select().where(event_ranges.c.rangeID == 1)).mappings().one()
        assert (row["status"], row["errorCode"], row["coreCount"], row["cpuConsumptionTime"]) == (
            "failed",
            None,
            None,
            None,
        )
        assert len(row["errorDiag"]) == 500
    finally:
        rt.engine.dispose()
