"""A crowd of consumers drains one pool of 10,000 event ranges: none is handed out twice.

100 event-service jobs of one job set are taken by 100 pilots over real HTTP, from two server
processes sharing the database (two nodes behind a balancer). Half of them take ranges with the
pilot's legacy getEventRanges, half with Harvester's v1 ``event/acquire_event_ranges``, and each
reports what it got as finished. Every range must be handed out exactly once, and finished.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from pandawms.config import load_settings
from pandawms.core.events import store
from pandawms.core.runtime import Runtime
from pandawms.db.engine import write_tx
from pandawms.db.schema_events import event_ranges
from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

N_CONSUMERS = 100
N_FILES = 10
RANGES_PER_FILE = 1000
JOBSET = 424242
TASK = 9


def _submit_consumers(base: str) -> list[int]:
    batch = [
        state_list(make_job(jobName=f"es{i}", prodSourceLabel="managed", eventService=1, jobsetID=JOBSET))
        for i in range(N_CONSUMERS)
    ]
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps(batch)}, timeout=60).json()
    assert reply["success"], reply
    return [answer[0] for answer in reply["data"]]


def _fill_pool(rt: Runtime) -> None:
    files = [
        store.InputFile(
            file_id=100 + i, lfn=f"EVNT.{i:05d}.pool.root.1", first_event=0, last_event=RANGES_PER_FILE - 1
        )
        for i in range(N_FILES)
    ]
    with write_tx(rt.engine) as conn:
        assert store.create_ranges(conn, TASK, JOBSET, files, 1) == N_FILES * RANGES_PER_FILE


def _consumer(base: str, index: int) -> list[str]:
    """A pilot: take a job, then take and finish ranges until the pool is empty."""
    got: list[str] = []
    with httpx.Client(timeout=120, headers={"Accept": "application/json"}) as client:
        job = client.post(
            base + "/server/panda/getJob",
            data={"siteName": "TEST_SITE", "prodSourceLabel": "managed", "node": f"wn{index}"},
        ).json()
        assert job["StatusCode"] == 0, job
        panda_id = int(job["PandaID"])
        assert job.get("eventService") == "True", job
        while True:
            ranges: list[dict[str, Any]]
            if index % 2:
                reply = client.post(
                    base + "/api/v1/event/acquire_event_ranges",
                    json={"job_id": panda_id, "jobset_id": JOBSET, "task_id": TASK, "n_ranges": 10},
                ).json()
                assert reply["success"], reply
                ranges = reply["data"]["eventRanges"]
            else:
                reply = client.post(
                    base + "/server/panda/getEventRanges",
                    data={"pandaID": panda_id, "jobsetID": JOBSET, "taskID": TASK, "nRanges": 10},
                ).json()
                assert reply["StatusCode"] == 0, reply
                ranges = reply["eventRanges"]
            if not ranges:
                return got
            got += [r["eventRangeID"] for r in ranges]
            done = [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in ranges]
            update = client.post(
                base + "/server/panda/updateEventRanges", data={"eventRanges": json.dumps(done), "version": 0}
            ).json()
            assert update["StatusCode"] == 0 and update["Returns"] == [True] * len(done), update


def test_crowd_of_consumers_never_gets_a_range_twice(
    db_url: str, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    first = start_server(db_url)
    (tmp_path / "second-node").mkdir()
    second = ServerProcess(db_url, tmp_path / "second-node")
    try:
        _submit_consumers(first.base)
        # the servers' database, opened by the test as a third client
        own = Runtime.from_settings(load_settings(None, {"db_url": db_url, "data_dir": str(tmp_path)}))
        try:
            _fill_pool(own)
            bases = [first.base, second.base]
            with ThreadPoolExecutor(N_CONSUMERS) as pool:
                results = list(pool.map(lambda i: _consumer(bases[i % 2], i), range(N_CONSUMERS)))
            handed = [rid for got in results for rid in got]
            # task-consumer-file-position-attempt: a range is its file and position
            positions = Counter(tuple(rid.split("-")[2:4]) for rid in handed)
            twice = [p for p, n in positions.items() if n > 1]
            assert not twice, f"handed out more than once: {twice[:10]}"
            assert len(positions) == N_FILES * RANGES_PER_FILE
            assert all(rid.endswith("-1") for rid in handed), "every range in its first attempt"
            assert sum(1 for got in results if got) > 10, "the work should be spread over many consumers"
            with own.engine.connect() as conn:
                statuses = dict(
                    conn.execute(
                        select(event_ranges.c.status, func.count()).group_by(event_ranges.c.status)
                    ).all()
                )
            assert statuses == {"finished": N_FILES * RANGES_PER_FILE}
        finally:
            own.engine.dispose()
    finally:
        second.stop()
