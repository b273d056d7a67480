"""Plain heartbeats through the worker's group commit, against a real server.

Many pilots' legacy ``updateJob`` "running" heartbeats arrive at once; one worker answers them
from the event loop while one thread runs each batch in one transaction
(:mod:`pandawms.core.batching`, :func:`pandawms.core.jobs.heartbeat.update_job_grouped`). Every
heartbeat must be answered on its own merits and be in the database once answered: the
back-channel command of its own job, the fallback path for jobs that are not running, and a
refusal by the database for one heartbeat only, never for the batch it shared.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ServerProcess
from tests.dbs import BACKENDS
from tests.jobs import make_job, state_list

JSON = {"Accept": "application/json"}
N_RUNNING = 60
#: What the fast path logs when the database refused a batch of several heartbeats.
RETRY_LINE = "retrying one by one"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> ServerProcess:
    """The real server (one worker, so concurrent heartbeats meet in its group commit)."""
    url = (
        f"sqlite:///{tmp_path / 'heartbeats.sqlite'}"
        if request.param == "sqlite"
        else BACKENDS[request.param].require()  # skips when no PostgreSQL server answers
    )
    return start_server(url)


def _backend(server: ServerProcess) -> str:
    return "sqlite" if server.db_url.startswith("sqlite") else "postgresql"


@contextmanager
def _db(server: ServerProcess) -> Iterator[Any]:
    engine = create_engine(server.db_url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _rows(server: ServerProcess, ids: list[int]) -> dict[int, dict[str, Any]]:
    with _db(server) as conn:
        rows = conn.execute(
            text(
                'SELECT "PandaID", "jobStatus", "cpuConsumptionTime", "maxRSS", "modificationHost",'
                ' "pilotID", "modificationTime", "startTime", "commandToPilot" FROM jobs'
            )
        ).mappings()
        found = {int(row["PandaID"]): dict(row) for row in rows}
    return {pid: found[pid] for pid in ids}


def _submit(base: str, n: int, label: str) -> list[int]:
    jobs = [state_list(make_job(jobName=f"{label}-{i}")) for i in range(n)]
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps(jobs)}, timeout=60).json()
    assert reply["success"], reply
    return [int(answer[0]) for answer in reply["data"]]


def _dispatch(base: str, n: int) -> list[int]:
    """Take ``n`` activated jobs with one bulk getJob; they are "sent" afterwards."""
    reply = httpx.post(
        base + "/server/panda/getJob",
        headers=JSON,
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "node": "wn0", "nJobs": str(n)},
        timeout=60,
    ).json()
    assert reply["StatusCode"] == 0, reply
    assert all(int(job["attemptNr"]) == 0 for job in reply["jobs"])
    return [int(job["PandaID"]) for job in reply["jobs"]]


def _heartbeat(pid: int, i: int, **extra: str) -> dict[str, str]:
    return {
        "jobId": str(pid),
        "state": "running",
        "attemptNr": "0",
        "cpuConsumptionTime": str(1000 + i),
        "maxRSS": str(2000 + i),
        "node": f"wn-{i}",
        **extra,
    }


def _send_all(base: str, updates: list[dict[str, str]]) -> list[httpx.Response]:
    """All updates at once, one connection each, as many pilots would send them."""

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(updates), max_keepalive_connections=0)
        async with httpx.AsyncClient(headers=JSON, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(client.post(base + "/server/panda/updateJob", data=update) for update in updates)
            )

    return asyncio.run(main())


def _answers(replies: list[httpx.Response]) -> list[tuple[int, int, str]]:
    """(HTTP status, StatusCode, command) of each reply."""
    out = []
    for reply in replies:
        body = reply.json()
        out.append((reply.status_code, body["StatusCode"], body.get("command", "")))
    return out


def _running_jobs(server: ServerProcess, n: int, label: str = "hb") -> list[int]:
    """``n`` running jobs: dispatched, then one concurrent "running" update each.

    Those first updates find the jobs "sent": the batched statement matches none of them and
    every one must take the full path, which moves the job to running.
    """
    ids = _dispatch(server.base, len(_submit(server.base, n, label)))
    assert len(ids) == n
    before = _rows(server, ids)
    assert {row["jobStatus"] for row in before.values()} == {"sent"}
    replies = _send_all(server.base, [_heartbeat(pid, i) for i, pid in enumerate(ids)])
    assert _answers(replies) == [(200, 0, "NULL")] * n
    after = _rows(server, ids)
    for i, pid in enumerate(ids):
        row = after[pid]
        assert row["jobStatus"] == "running" and row["startTime"] is not None, row
        assert row["cpuConsumptionTime"] == 1000 + i and row["modificationHost"] == f"wn-{i}", row
    return ids


def test_concurrent_heartbeats_are_all_answered_and_stored(server: ServerProcess) -> None:
    ids = _running_jobs(server, N_RUNNING)
    for round_ in (1, 2):
        before = _rows(server, ids)
        time.sleep(0.01)  # modificationTime must be able to move, whatever the clock resolution
        replies = _send_all(
            server.base,
            [_heartbeat(pid, 100 * round_ + i, pilotID=f"pilot-{round_}-{i}") for i, pid in enumerate(ids)],
        )
        assert _answers(replies) == [(200, 0, "NULL")] * len(ids), [r.text for r in replies]
        after = _rows(server, ids)
        for i, pid in enumerate(ids):
            row = after[pid]
            assert row["jobStatus"] == "running", row
            assert row["cpuConsumptionTime"] == 1000 + 100 * round_ + i, row
            assert row["maxRSS"] == 2000 + 100 * round_ + i, row
            assert row["modificationHost"] == f"wn-{100 * round_ + i}", row
            assert row["pilotID"] == f"pilot-{round_}-{i}", row
            assert row["modificationTime"] > before[pid]["modificationTime"], (row, before[pid])


def test_kill_commands_and_jobs_not_running_in_a_concurrent_batch(server: ServerProcess) -> None:
    """Each heartbeat of a mixed crowd gets the answer of its own job.

    Killed running jobs answer ``tobekilled`` from the batched statement itself; jobs that are
    not running (still "sent", already ended, unknown, another attempt) take the fallback path.
    """
    base = server.base
    running = _running_jobs(server, N_RUNNING)
    killed = running[5:50:9]  # five of them, spread over the crowd
    reply = httpx.post(base + "/api/v1/job/kill", json={"job_ids": killed}, timeout=30).json()
    assert reply["data"] == [True] * len(killed), reply
    sent = _dispatch(base, len(_submit(base, 4, "sent")))
    (cancelled,) = _dispatch(base, len(_submit(base, 1, "cancelled")))
    reply = httpx.post(base + "/api/v1/job/kill", json={"job_ids": [cancelled]}, timeout=30).json()
    assert reply["data"] == [True], reply
    unknown = max(running + sent + [cancelled]) + 1000
    wrong_attempt = running[-1]
    rows = _rows(server, running + sent + [cancelled])
    assert {rows[pid]["jobStatus"] for pid in sent} == {"sent"}
    assert rows[cancelled]["jobStatus"] == "cancelled"
    assert all(rows[pid]["jobStatus"] == "running" for pid in killed)
    assert {rows[pid]["commandToPilot"] for pid in killed} == {"tobekilled"}

    updates: list[tuple[dict[str, str], tuple[int, int, str]]] = []
    for i, pid in enumerate(running[:-1]):
        expected = "tobekilled" if pid in killed else "NULL"
        updates.append((_heartbeat(pid, 500 + i), (200, 0, expected)))
    for i, pid in enumerate(sent):
        updates.insert(10 * i + 3, (_heartbeat(pid, 700 + i), (200, 0, "NULL")))
    updates.insert(20, (_heartbeat(cancelled, 800), (200, 0, "tobekilled")))
    updates.insert(30, (_heartbeat(unknown, 801), (200, 0, "tobekilled")))
    updates.insert(40, (_heartbeat(wrong_attempt, 802, attemptNr="3"), (200, 0, "tobekilled")))
    assert len(updates) >= 50

    before = _rows(server, running + sent + [cancelled])
    replies = _send_all(base, [update for update, _ in updates])
    assert _answers(replies) == [want for _, want in updates], [r.text for r in replies]

    after = _rows(server, running + sent + [cancelled])
    for i, pid in enumerate(running[:-1]):
        # A killed job's heartbeat is still stored: the job keeps running until its pilot stops.
        assert after[pid]["jobStatus"] == "running" and after[pid]["cpuConsumptionTime"] == 1500 + i
        assert after[pid]["modificationTime"] > before[pid]["modificationTime"]
    for i, pid in enumerate(sent):
        assert after[pid]["jobStatus"] == "running" and after[pid]["startTime"] is not None, after[pid]
        assert after[pid]["cpuConsumptionTime"] == 1700 + i, after[pid]
    assert after[cancelled] == before[cancelled], "an ended job's heartbeat changed it"
    assert after[wrong_attempt] == before[wrong_attempt], "another attempt's heartbeat changed the job"


POISON = "refused-by-the-database"

_INSTALL = {
    # A real refusal of one value, as a column too short for what a pilot sends would give.
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION test_refuse_pilot_id() RETURNS trigger AS $$
        BEGIN
            IF NEW."pilotID" = '{POISON}' THEN
                RAISE EXCEPTION 'value too long for type character varying(8)'
                    USING ERRCODE = 'string_data_right_truncation';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER test_refuse_pilot_id BEFORE UPDATE ON jobs"
        " FOR EACH ROW EXECUTE FUNCTION test_refuse_pilot_id()",
    ],
    "sqlite": [
        "CREATE TRIGGER test_refuse_pilot_id BEFORE UPDATE ON jobs"
        f" WHEN NEW.\"pilotID\" = '{POISON}' BEGIN SELECT RAISE(ABORT, 'pilotID refused'); END"
    ],
}
_REMOVE = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS test_refuse_pilot_id ON jobs",
        "DROP FUNCTION IF EXISTS test_refuse_pilot_id()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS test_refuse_pilot_id"],
}
#: The refusal's HTTP status: PostgreSQL's is a DataError (400), SQLite's trigger a constraint (409).
_REFUSED_STATUS = {"postgresql": 400, "sqlite": 409}


def test_a_heartbeat_the_database_refuses_fails_alone(server: ServerProcess) -> None:
    """One refused heartbeat in a concurrent crowd: its batch is retried item by item.

    The updateJob parser cuts every text field to its column's length and checks every number's
    range, so no pilot value can be too long for its column; a trigger makes the database refuse
    one pilotID instead. The crowd is sent again until the server's log shows that a batch of
    several heartbeats (not the refused one alone) was refused and retried.
    """
    backend = _backend(server)
    ids = _running_jobs(server, N_RUNNING)
    bad = ids[N_RUNNING // 2]
    with _db(server) as conn:
        for statement in _INSTALL[backend]:
            conn.execute(text(statement))
    log_start = len(server.log())
    try:
        rounds = 0
        while RETRY_LINE not in server.log()[log_start:]:
            rounds += 1
            assert rounds <= 5, "the refused heartbeat never shared a batch with others"
            before = _rows(server, ids)
            updates = [
                _heartbeat(pid, 100 * rounds + i, pilotID=POISON if pid == bad else f"p{rounds}-{i}")
                for i, pid in enumerate(ids)
            ]
            replies = _send_all(server.base, updates)
            after = _rows(server, ids)
            for i, (pid, reply) in enumerate(zip(ids, replies, strict=True)):
                body = reply.json()
                if pid == bad:
                    assert reply.status_code == _REFUSED_STATUS[backend], reply.text
                    assert body["StatusCode"] != 0 and "errorDialog" in body, body
                    assert after[pid] == before[pid], "the refused heartbeat changed its job"
                    continue
                assert (reply.status_code, body) == (200, {"StatusCode": 0, "command": "NULL"}), reply.text
                assert after[pid]["pilotID"] == f"p{rounds}-{i}", after[pid]
                assert after[pid]["cpuConsumptionTime"] == 1000 + 100 * rounds + i, after[pid]
                assert after[pid]["modificationTime"] > before[pid]["modificationTime"]
    finally:
        with _db(server) as conn:
            for statement in _REMOVE[backend]:
                conn.execute(text(statement))
    # Once the value is accepted again, the job's heartbeats go through as before.
    replies = _send_all(server.base, [_heartbeat(pid, 9000, pilotID=POISON) for pid in ids[:3] + [bad]])
    assert _answers(replies) == [(200, 0, "NULL")] * 4
    assert _rows(server, [bad])[bad]["pilotID"] == POISON


def test_an_out_of_range_memory_leak_metric_is_dropped_not_fatal(server: ServerProcess) -> None:
    ids = _running_jobs(server, 10, "leak")
    updates = [
        _heartbeat(pid, i, jobMetrics="leak=1e30" if i == 5 else f"leak={i}") for i, pid in enumerate(ids)
    ]
    replies = _send_all(server.base, updates)
    assert _answers(replies)[:5] + _answers(replies)[6:] == [(200, 0, "NULL")] * 9, (
        "only the bad one may fail"
    )
    assert _answers(replies)[5] == (200, 0, "NULL"), replies[5].text
