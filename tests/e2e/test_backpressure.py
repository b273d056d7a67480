"""Back-pressure: a saturated connection pool or a stuck statement makes the server answer 503.

The server runs with one pooled connection per process. Another database session holds a lock
that the next pilot update must wait for, so that update keeps the only connection; every other
request then waits ``db_pool_timeout`` for a connection and gets 503, ``Retry-After`` and a
PanDA-style error instead of queueing without end. When the lock goes, everything recovers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list

SATURATED = {
    "PANDA_DB_POOL_SIZE": "1",
    "PANDA_DB_MAX_OVERFLOW": "0",
    "PANDA_DB_POOL_TIMEOUT": "1",
    "PANDA_BUSY_RETRY_AFTER": "7",
}


def _running_job(base: str) -> int:
    """Submit one job, take it as a pilot and report it running; return its PandaID."""
    job = state_list(make_job(jobName="bp", prodSourceLabel="managed"))
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps([job])}, timeout=30).json()
    assert reply["success"], reply
    panda_id = int(reply["data"][0][0])
    got = httpx.post(
        base + "/server/panda/getJob",
        data={"siteName": "TEST_SITE", "prodSourceLabel": "managed", "node": "wn1"},
        headers={"Accept": "application/json"},
        timeout=30,
    ).json()
    assert got["StatusCode"] == 0 and int(got["PandaID"]) == panda_id, got
    _heartbeat(base, panda_id, timeout=30)
    return panda_id


def _heartbeat(base: str, panda_id: int, timeout: float) -> httpx.Response:
    return httpx.post(
        base + "/server/panda/updateJob",
        data={"jobId": panda_id, "state": "running", "attemptNr": 0},
        headers={"Accept": "application/json"},
        timeout=timeout,
    )


@contextmanager
def _row_locked(url: str, panda_id: int) -> Iterator[None]:
    """Another session holds a write lock the job's next update must wait for."""
    if url.startswith("sqlite"):
        lite = sqlite3.connect(make_url(url).database or "", timeout=5, isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")  # the database write lock
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin() as tx:
            conn.execute(text('SELECT 1 FROM jobs WHERE "PandaID" = :p FOR UPDATE'), {"p": panda_id})
            try:
                yield
            finally:
                tx.rollback()
    finally:
        engine.dispose()


def _wait_until_blocked(url: str) -> None:
    """Until the server's session waits on our lock (PostgreSQL); a short pause on SQLite."""
    if url.startswith("sqlite"):
        time.sleep(0.5)
        return
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
        raise AssertionError("the server's update never waited on the lock")
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_exhausted_pool_answers_503_with_retry_after(
    backend: str, request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    """One connection, held by a blocked update: other calls get 503 + Retry-After, then recover."""
    from tests.dbs import BACKENDS

    url = f"sqlite:///{tmp_path / 'bp.sqlite'}" if backend == "sqlite" else BACKENDS[backend].require()
    server = start_server(url, env=SATURATED)
    panda_id = _running_job(server.base)
    blocked: dict[str, Any] = {}
    with _row_locked(url, panda_id):
        holder = threading.Thread(
            target=lambda: blocked.setdefault("reply", _heartbeat(server.base, panda_id, timeout=60))
        )
        holder.start()
        _wait_until_blocked(url)

        started = time.monotonic()
        v1 = httpx.get(server.base + "/api/v1/job/get_status", params={"job_ids": panda_id}, timeout=30)
        waited = time.monotonic() - started
        assert v1.status_code == 503, v1.text
        assert v1.headers["retry-after"] == "7"
        body = v1.json()
        assert body["success"] is False and "busy" in body["message"], body
        assert 0.9 <= waited < 10, f"answered after {waited:.2f} s, expected about the 1 s pool timeout"

        legacy = httpx.post(
            server.base + "/server/panda/getJob",
            data={"siteName": "TEST_SITE", "prodSourceLabel": "managed", "node": "wn2"},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert legacy.status_code == 503, legacy.text
        assert legacy.headers["retry-after"] == "7"
        assert legacy.json()["StatusCode"] == 10 and "busy" in legacy.json()["errorDialog"]
        assert holder.is_alive(), "the blocked update should still hold the connection"
    holder.join(30)
    assert not holder.is_alive()
    assert blocked["reply"].status_code == 200 and blocked["reply"].json()["StatusCode"] == 0
    after = httpx.get(server.base + "/api/v1/job/get_status", params={"job_ids": panda_id}, timeout=30)
    assert after.status_code == 200 and after.json()["data"][0]["status"] == "running"


def test_statement_timeout_ends_a_stuck_update_with_503(start_server: Callable[..., ServerProcess]) -> None:
    """PostgreSQL: a statement blocked longer than db_statement_timeout becomes a 503, not a hang."""
    from tests.dbs import BACKENDS

    url = BACKENDS["postgresql"].require()
    server = start_server(url, env={"PANDA_DB_STATEMENT_TIMEOUT": "500", "PANDA_BUSY_RETRY_AFTER": "3"})
    panda_id = _running_job(server.base)
    with _row_locked(url, panda_id):
        started = time.monotonic()
        reply = _heartbeat(server.base, panda_id, timeout=30)
        waited = time.monotonic() - started
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "3"
    assert reply.json()["StatusCode"] == 10
    assert waited < 10, f"the stuck update took {waited:.2f} s"
    assert _heartbeat(server.base, panda_id, timeout=30).json()["StatusCode"] == 0
