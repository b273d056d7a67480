"""The v1 pilot calls share the group commit with their legacy twins, against a real server.

``pilot/acquire_jobs`` (one job as pilot 3.11 asks, or tens as Harvester does),
``pilot/update_job`` and every entry of ``pilot/update_jobs_bulk`` join the same per-worker
batches as getJob and updateJob (:mod:`pandawms.core.batching`). Through them, every job must
still be handed out once, every update stored with its exact status-log rows, each caller (and
each bulk entry) answered on its own, and a refused entry must fail alone.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pandawms.api import v1
from tests.conftest import ServerProcess
from tests.dbs import BACKENDS
from tests.e2e.test_heartbeat_batch import _INSTALL, _REMOVE, POISON, _backend, _db
from tests.e2e.test_update_batch import (
    LIFECYCLE,
    _history,
    _jobs,
    _lfns,
    _shared_stamps,
    _submit,
    _transitions,
)

#: What the full path logs when the database refused a batch of several updates.
RETRY_LINE = re.compile(r"(update|heartbeat) batch of (\d+) refused \(\w+\); retrying one by one")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> ServerProcess:
    """The real server (one worker, so concurrent calls meet in its group commit)."""
    url = (
        f"sqlite:///{tmp_path / 'v1batch.sqlite'}"
        if request.param == "sqlite"
        else BACKENDS[request.param].require()  # skips when no PostgreSQL server answers
    )
    return start_server(url)


def test_the_hot_v1_pilot_calls_run_on_the_event_loop() -> None:
    """Declared ``async def``: the app awaits them on the loop, where the group commit is."""
    for name in ("acquire_jobs", "update_job", "update_jobs_bulk"):
        assert v1.METHODS[("pilot", name)].on_loop, name
    assert not v1.METHODS[("job", "submit")].on_loop


def _gzip_json(fields: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A body as pilot 3.11 sends a v1 call: gzip-compressed JSON, saying so."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept": "application/json"}
    return gzip.compress(json.dumps(fields).encode()), headers


def _post_all(base: str, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """All calls at once, one connection each (as many pilots); each answer's JSON, in order."""

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            requests = []
            for path, fields in calls:
                body, headers = _gzip_json(fields)
                requests.append(client.post(base + path, content=body, headers=headers))
            return await asyncio.gather(*requests)

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200] * len(calls), [r.text for r in replies]
    return [r.json() for r in replies]


def _acquire(n_jobs: int | None, i: int) -> tuple[str, dict[str, Any]]:
    fields: dict[str, Any] = {"site_name": "TEST_SITE", "prod_source_label": "user", "node": f"wn-{i}"}
    if n_jobs is not None:
        fields.update(n_jobs=n_jobs, scheduler_id="harvester-test")
    return "/api/v1/pilot/acquire_jobs", fields


def _update(job: dict[str, Any], state: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": int(job["PandaID"]),
        "job_status": state,
        "attempt_nr": int(job["attemptNr"]),
        "site_name": "TEST_SITE",
        "node": f"wn-{i}",
        "cpu_consumption_time": 10 + i,
        **extra,
    }


def _final(job: dict[str, Any], i: int) -> dict[str, Any]:
    pid = int(job["PandaID"])
    report = {
        lfn: {"guid": f"guid-{pid}-{k}", "fsize": 1000 + k, "adler32": "0988eb14"}
        for k, lfn in enumerate(_lfns(job))
    }
    return _update(
        job,
        "finished",
        i,
        job_output_report=json.dumps(report),
        meta_data=json.dumps({"exeErrorCode": 0, "pandaid": pid}),
        pilot_log=f"pilot log of {pid}",
        trans_exit_code=0,
        pilot_error_code=0,
    )


def _sent_rows(server: ServerProcess, ids: list[int]) -> dict[int, int]:
    """How many 'sent' status-log rows each job has."""
    with _db(server) as conn:
        rows = conn.execute(
            text(
                """SELECT "PandaID", COUNT(*) FROM job_status_log WHERE "jobStatus" = 'sent' GROUP BY "PandaID" """
            )
        ).all()
    found = {int(pid): int(count) for pid, count in rows}
    return {pid: found.get(pid, 0) for pid in ids}


def _acquired(server: ServerProcess, n: int, label: str) -> list[dict[str, Any]]:
    """``n`` jobs taken by concurrent single-job v1 acquires."""
    ids = _submit(server.base, n, label)
    answers = _post_all(server.base, [_acquire(None, i) for i in range(n)])
    jobs = [job for answer in answers for job in answer["data"]["jobs"]]
    assert sorted(int(job["PandaID"]) for job in jobs) == sorted(ids)
    return jobs


def test_concurrent_v1_and_legacy_acquires_hand_each_job_out_once(server: ServerProcess) -> None:
    """Single acquires, Harvester's bulk acquires and legacy getJobs compete for fewer jobs."""
    ids = _submit(server.base, 150, "acq")
    calls = [_acquire(None, i) for i in range(50)]
    calls[5:5] = [_acquire(10 + 5 * k, 100 + k) for k in range(6)]  # 10..35 jobs each, 135 in all
    answers = _post_all(server.base, calls)
    legacy = httpx.post(
        server.base + "/server/panda/getJob",
        headers={"Accept": "application/json"},
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "nJobs": "500"},
        timeout=60,
    ).json()

    given: list[int] = []
    for (_, fields), answer in zip(calls, answers, strict=True):
        if answer["success"]:
            jobs = answer["data"]["jobs"]
            assert answer["data"]["StatusCode"] == 0 and 1 <= len(jobs) <= fields.get("n_jobs", 1), answer
            given += [int(job["PandaID"]) for job in jobs]
        else:
            assert (answer["message"], answer["data"]) == ("No jobs in PanDA", None), answer
    if legacy["StatusCode"] == 0:
        given += [int(job["PandaID"]) for job in legacy["jobs"]]
    assert len(given) == len(set(given)), "a job was handed out twice"
    assert sorted(given) == sorted(ids), "a job was lost"
    assert set(_sent_rows(server, ids).values()) == {1}
    rows = _jobs(server, ids)
    assert {row["jobStatus"] for row in rows.values()} == {"sent"}
    histories = _history(server, ids)
    assert _shared_stamps(histories, ("activated", "sent")) > 0, "no acquire was batched"


def test_concurrent_v1_updates_are_stored_with_exact_status_logs(server: ServerProcess) -> None:
    """Starting, running, heartbeats and finished for 40 jobs: each answered, each moved once."""
    jobs = _acquired(server, 40, "life")
    ids = [int(job["PandaID"]) for job in jobs]
    ok = {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}
    path = "/api/v1/pilot/update_job"
    for state, offset in (("starting", 0), ("running", 100), ("running", 200)):
        answers = _post_all(
            server.base, [(path, _update(job, state, offset + i)) for i, job in enumerate(jobs)]
        )
        assert answers == [ok] * len(jobs), answers
    rows = _jobs(server, ids)
    for i, pid in enumerate(ids):
        assert rows[pid]["jobStatus"] == "running", rows[pid]
        assert (rows[pid]["cpuConsumptionTime"], rows[pid]["modificationHost"]) == (210 + i, f"wn-{200 + i}")

    # Half finish one by one, half in two update_jobs_bulk calls (as Harvester reports them).
    half = len(jobs) // 2
    singles = [(path, _final(job, 300 + i)) for i, job in enumerate(jobs[:half])]
    bulk_path = "/api/v1/pilot/update_jobs_bulk"
    bulks = [
        (
            bulk_path,
            {
                "job_list": [_final(job, 300 + half + k + i) for i, job in enumerate(chunk)],
                "harvester_id": "h1",
            },
        )
        for k, chunk in ((0, jobs[half : half + 10]), (10, jobs[half + 10 :]))
    ]
    answers = _post_all(server.base, singles + bulks)
    assert answers[:half] == [ok] * half, answers[:half]
    for (_, fields), answer in zip(bulks, answers[half:], strict=True):
        assert answer["success"] and answer["data"] == [ok] * len(fields["job_list"]), answer

    rows = _jobs(server, ids)
    histories = _history(server, ids)
    for i, pid in enumerate(ids):
        assert rows[pid]["jobStatus"] == "finished" and str(rows[pid]["transExitCode"]) == "0", rows[pid]
        assert rows[pid]["cpuConsumptionTime"] == 310 + i, rows[pid]
        assert _transitions(histories[pid]) == LIFECYCLE, (pid, histories[pid])
    assert sum(_shared_stamps(histories, move) for move in LIFECYCLE[1:]) > 0, "no update was batched"


def test_each_bulk_entry_is_answered_alone_and_a_refused_one_fails_alone(server: ServerProcess) -> None:
    """One update_jobs_bulk: good entries, malformed ones and one the database refuses.

    The entries of one call join one batch; the database refusing one of them reruns that batch
    one by one (the server says so in its log), so only that entry fails.
    """
    backend = _backend(server)
    jobs = _acquired(server, 30, "bulk")
    ids = [int(job["PandaID"]) for job in jobs]
    path = "/api/v1/pilot/update_jobs_bulk"
    answer = _post_all(
        server.base, [(path, {"job_list": [_update(job, "running", i) for i, job in enumerate(jobs)]})]
    )
    assert answer[0]["success"] and all(item["success"] for item in answer[0]["data"]), answer
    bad = ids[11]
    with _db(server) as conn:
        for statement in _INSTALL[backend]:
            conn.execute(text(statement))
    log_start = len(server.log())
    try:
        entries: list[Any] = [
            _update(job, "running", 100 + i, pilot_id=POISON if int(job["PandaID"]) == bad else f"p-{i}")
            for i, job in enumerate(jobs)
        ]
        entries.insert(3, "not an object")
        entries.insert(7, _update(jobs[0], "exploded", 0))
        entries.insert(9, {**_update(jobs[1], "running", 0), "no_such_field": 1})
        before = _jobs(server, ids)
        (reply,) = _post_all(server.base, [(path, {"job_list": entries, "harvester_id": "h1"})])
    finally:
        with _db(server) as conn:
            for statement in _REMOVE[backend]:
                conn.execute(text(statement))
    assert reply["success"] and len(reply["data"]) == len(entries), reply
    items = reply["data"]
    assert (items[3]["success"], items[3]["data"]) == (False, None)
    assert items[7]["success"] is False and "exploded" in items[7]["message"], items[7]
    assert items[9]["success"] is False and "no_such_field" in items[9]["message"], items[9]
    good = [item for k, item in enumerate(items) if k not in (3, 7, 9)]
    after = _jobs(server, ids)
    for i, (pid, item) in enumerate(zip(ids, good, strict=True)):
        if pid == bad:
            assert item["success"] is False and "refused" in item["message"], item
            assert after[pid]["cpuConsumptionTime"] == before[pid]["cpuConsumptionTime"]
            continue
        assert item == {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}, item
        assert after[pid]["cpuConsumptionTime"] == 110 + i, after[pid]
    found = RETRY_LINE.search(server.log()[log_start:])
    assert found and int(found.group(2)) > 1, "the refused entry did not share a batch"
