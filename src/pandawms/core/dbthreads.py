"""Threads that may hold a database connection: at most ``db_pool_size`` per worker process.

The database layer is synchronous, so database work runs in threads. A worker used to run up
to ``worker_threads`` (40) of them against a pool of ``db_pool_size`` (10) connections plus
``db_max_overflow`` (5): under load the pool opened an overflow connection for a request and
closed it again when the request gave it back, hundreds of new PostgreSQL sessions a second.
Here every such thread first takes one of ``Settings.request_threads`` (``worker_threads``
capped at ``db_pool_size``) places, so in steady use every connection is a pooled one, opened
once. A request that finds no place free within ``db_pool_timeout`` seconds fails with the
pool's own timeout error, which the HTTP layer answers with 503 + Retry-After, the same
back-pressure as an exhausted pool.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter, to_thread
from sqlalchemy import exc as sa_exc

T = TypeVar("T")


def _limiter(rt: Any) -> CapacityLimiter:
    """The runtime's limiter for the running event loop (a worker has one loop; tests start many)."""
    loop = asyncio.get_running_loop()
    return rt.kept(("dbthreads.limiter", id(loop)), lambda: CapacityLimiter(rt.settings.request_threads))


async def run_db(rt: Any, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in a worker thread, once one of the worker's database places is free."""
    limiter = _limiter(rt)
    timeout = float(rt.settings.db_pool_timeout)
    try:
        with anyio.fail_after(timeout):
            await limiter.acquire()
    except TimeoutError:
        raise sa_exc.TimeoutError(f"no database connection free within {timeout:g} s") from None
    try:
        return await to_thread.run_sync(functools.partial(func, *args, **kwargs))
    finally:
        limiter.release()
