"""A database that stops answering: calls get 503 + Retry-After in bounded time, is_alive stays up.

The server reaches PostgreSQL through a small TCP relay run by the test, which can be frozen:
it keeps every connection open but forwards nothing, as a stopped database server or a stalled
network would. While it is frozen, calls that need the database must end with 503 and
Retry-After (the client-side request timeout cuts the hung session), calls that need no
database (``is_alive``, legacy ``isAlive``) must answer at once even from callers whose
identity is checked against the ban list, and after the thaw everything works again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ServerProcess
from tests.jobs import make_job, state_list


class FreezableProxy:
    """A loopback TCP relay to ``target`` that stops forwarding bytes while frozen."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.thawed.wait()  # while frozen a new connection is accepted and left waiting
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.thawed.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()  # on cancel too: the loop is still running then

    def freeze(self) -> None:
        self.loop.call_soon_threadsafe(self.thawed.clear)

    def thaw(self) -> None:
        self.loop.call_soon_threadsafe(self.thawed.set)

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def pg_proxy() -> Iterator[tuple[str, FreezableProxy]]:
    from tests.dbs import BACKENDS

    url = make_url(BACKENDS["postgresql"].require())
    proxy = FreezableProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        proxy.close()


def _token(name: str) -> str:
    """An unsigned token with a name: in open mode it gives the caller a DN (so a ban-list check)."""
    claims = base64.urlsafe_b64encode(json.dumps({"name": name, "sub": "x"}).encode()).decode().rstrip("=")
    return f"e30.{claims}.sig"


def test_frozen_database_gives_503_and_is_alive_answers(
    pg_proxy: tuple[str, FreezableProxy], start_server: Callable[..., ServerProcess]
) -> None:
    url, proxy = pg_proxy
    server = start_server(
        url,
        env={
            "PANDA_DB_POOL_TIMEOUT": "2",
            "PANDA_DB_REQUEST_TIMEOUT": "3",
            "PANDA_DB_CONNECT_TIMEOUT": "2",
            "PANDA_BUSY_RETRY_AFTER": "4",
            "PANDA_WORKER_THREADS": "4",
            "PANDA_BAN_CACHE_SECONDS": "1",
        },
    )
    base = server.base
    auth = {"Authorization": "Bearer " + _token("Jane Doe")}
    job = state_list(make_job(jobName="hang", prodSourceLabel="managed"))
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps([job])}, timeout=30).json()
    assert reply["success"], reply
    panda_id = int(reply["data"][0][0])
    assert (
        httpx.get(base + "/api/v1/job/get_status", params={"job_ids": panda_id}, timeout=30).status_code
        == 200
    )
    time.sleep(1.5)  # the ban list copies are now stale: the next identified call wants a fresh one

    proxy.freeze()
    try:
        results: list[tuple[int, float, str | None]] = []

        def db_call() -> None:
            started = time.monotonic()
            try:
                got = httpx.get(
                    base + "/api/v1/job/get_status", params={"job_ids": panda_id}, headers=auth, timeout=60
                )
                results.append((got.status_code, time.monotonic() - started, got.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                results.append((-1, time.monotonic() - started, str(exc)))

        callers = [threading.Thread(target=db_call) for _ in range(8)]
        for caller in callers:
            caller.start()
        time.sleep(0.5)
        slowest = 0.0
        for _ in range(5):
            for path, check in (
                ("/api/v1/system/is_alive", lambda r: r.json()["success"] is True),
                ("/server/panda/isAlive", lambda r: r.text == "alive=yes"),
            ):
                started = time.monotonic()
                alive = httpx.get(base + path, headers=auth, timeout=30)
                took = time.monotonic() - started
                slowest = max(slowest, took)
                assert alive.status_code == 200 and check(alive), alive.text
                assert took < 5, f"{path} took {took:.1f} s while the database hangs"
            time.sleep(0.3)
        for caller in callers:
            caller.join(60)
        print(f"frozen database: is_alive at most {slowest:.2f} s")
        print(f"frozen database: 503 after at most {max(r[1] for r in results):.1f} s")
        assert len(results) == 8
        for status, took, retry in results:
            assert status == 503 and retry == "4", results
            assert took < 25, f"a database call took {took:.1f} s to be told 503: {results}"
    finally:
        proxy.thaw()

    deadline = time.monotonic() + 60
    last: Any = None
    while time.monotonic() < deadline:
        last = httpx.get(
            base + "/api/v1/job/get_status", params={"job_ids": panda_id}, headers=auth, timeout=30
        )
        if last.status_code == 200:
            break
        time.sleep(0.5)
    assert last.status_code == 200 and last.json()["data"][0]["status"] != "unknown", last.text
