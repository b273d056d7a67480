"""Many pilots, two server processes, one database: no job is handed out twice, none is lost."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

N_JOBS = 400
N_PILOTS = 32


def _submit_many(base: str, n: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, n, 200):
        batch = [
            state_list(make_job(jobName=f"c{i}", prodSourceLabel="managed", assignedPriority=i % 7))
            for i in range(start, min(n, start + 200))
        ]
        reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps(batch)}, timeout=60).json()
        assert reply["success"], reply
        ids += [answer[0] for answer in reply["data"]]
    return ids


def _pilot(bases: list[str], index: int) -> list[int]:
    got: list[int] = []
    base = bases[index % len(bases)]
    with httpx.Client(timeout=60, headers={"Accept": "application/json"}) as client:
        while True:
            reply = client.post(
                base + "/server/panda/getJob",
                data={"siteName": "TEST_SITE", "prodSourceLabel": "managed", "node": f"wn{index}"},
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            if body["StatusCode"] == 20:
                return got
            assert body["StatusCode"] == 0, body
            got.append(int(body["PandaID"]))


def test_concurrent_getjob_never_dispatches_twice(
    db_url: str, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Two server processes share the database (two nodes behind a balancer); 32 pilots drain it."""
    first = start_server(db_url)
    (tmp_path / "second-node").mkdir()
    second = ServerProcess(db_url, tmp_path / "second-node")
    try:
        submitted = _submit_many(first.base, N_JOBS)
        with ThreadPoolExecutor(N_PILOTS) as pool:
            results = list(pool.map(lambda i: _pilot([first.base, second.base], i), range(N_PILOTS)))
        dispatched = [pid for got in results for pid in got]
        twice = [pid for pid, n in Counter(dispatched).items() if n > 1]
        assert not twice, f"dispatched more than once: {twice[:10]}"
        assert sorted(dispatched) == sorted(submitted)
        assert sum(1 for got in results if got) > 1, "more than one pilot should have received work"
    finally:
        second.stop()
