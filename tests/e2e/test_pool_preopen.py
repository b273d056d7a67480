"""Each httpd worker opens its database threads' connections before it serves.

With ``PANDA_DB_POOL_PREOPEN=1`` (the default outside the tests) a worker holds
``request_threads`` open PostgreSQL sessions from its start, so a load arriving later opens none
(benchmarks/README.md: connections opened in the measuring window). Counted by the server itself
(``pandawms_db_connections_opened_total``, every worker) and by PostgreSQL
(``pg_stat_activity`` of the server's database).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import ServerProcess
from tests.dbs import BACKENDS, PG_ADMIN_URL
from tests.jobs import make_job, state_list

WORKERS, POOL = 2, 3


def _opened(base: str) -> float:
    """The server's count, summed over the workers; a worker publishes it with each request it
    serves, so every worker is made to serve some first (a new connection each time)."""
    for _ in range(40):
        assert httpx.get(base + "/api/v1/system/is_alive").status_code == 200
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith("pandawms_db_connections_opened_total "):
            return float(line.split()[1])
    raise AssertionError("no pandawms_db_connections_opened_total in /metrics")


def _sessions(url: str) -> int:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": make_url(url).database},
                ).scalar_one()
            )
    finally:
        admin.dispose()


async def _load(base: str, n_jobs: int) -> int:
    """Many pilots at once: getJob, then a running heartbeat each."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def pilot() -> bool:
            reply = await client.post(
                "/server/panda/getJob", data={"siteName": "POOL_SITE", "prodSourceLabel": "managed"}
            )
            job = dict(x.split("=", 1) for x in reply.text.split("&") if "=" in x)
            if job.get("StatusCode") == "0":
                beat = await client.post(
                    "/server/panda/updateJob", data={"jobId": job["PandaID"], "state": "running"}
                )
                assert beat.status_code == 200, beat.text
                return True
            return False

        return sum(await asyncio.gather(*(pilot() for _ in range(n_jobs))))


@pytest.mark.parametrize("preopen", ["1", "0"])
def test_workers_open_their_pool_before_serving(
    start_server: Callable[..., ServerProcess], preopen: str
) -> None:
    url = BACKENDS["postgresql"].require()
    server = start_server(
        url,
        env={
            "PANDA_WORKERS": str(WORKERS),
            "PANDA_DB_POOL_SIZE": str(POOL),
            "PANDA_WORKER_THREADS": "20",
            "PANDA_DB_POOL_PREOPEN": preopen,
            "PANDA_DAEMON_TASKS": "watcher",
        },
    )
    at_start = _opened(server.base)
    if preopen == "0":
        assert at_start < WORKERS * POOL, "connections are opened on first use"
        return
    assert at_start >= WORKERS * POOL
    jobs = [
        state_list(make_job("POOL_SITE", jobName=f"pool-{i}", prodSourceLabel="managed")) for i in range(60)
    ]
    reply = httpx.post(server.base + "/api/v1/job/submit", json={"jobs": json.dumps(jobs)}, timeout=30)
    assert reply.json()["success"], reply.text
    sessions = _sessions(url)
    assert asyncio.run(_load(server.base, 60)) == 60
    assert _opened(server.base) == at_start, "a worker opened a connection under load"
    assert _sessions(url) <= sessions
