"""Group commit on the event loop: concurrent requests of one worker share one transaction.

A pilot's getJob or heartbeat is a few microseconds of database work wrapped in a request
that, done alone, also pays for a thread hand-off, a pool checkout, BEGIN and COMMIT. Under
load most of a worker's CPU went there (py-spy, benchmarks/README.md). Here each request
waits on the event loop (no thread of its own) while one thread per key runs the database
work for everything that queued up meanwhile, in one transaction:

* light load: the first request finds nobody running and starts at once, with no added delay;
* heavy load: while one batch runs, the next gathers, and the cost of the transaction, the
  thread hop and the commit is shared by the whole batch.

A request is answered only after its batch committed, so an acknowledged update is durable.
The batch function returns one result (or exception) per item, in order, so one bad item
does not fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Engine

from pandawms.core.dbthreads import run_db
from pandawms.db.engine import BUSY_ERRORS, is_deadlock, write_tx

log = logging.getLogger("pandawms.core.batching")

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Lane(Generic[Item, Result]):
    def __init__(self) -> None:
        self.pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.running = 0


class GroupRunner(Generic[Item, Result]):
    """Runs ``work(key, items)`` in a thread for the items that arrived while the last batch ran.

    ``work`` must return exactly one outcome per item. Items with different keys never share
    a batch, and each key has at most ``parallel`` batches (given by the caller, default one)
    running in this process at a time.
    """

    def __init__(
        self,
        work: Callable[[Hashable, Sequence[Item]], list[Result | BaseException]],
        max_batch: int = 200,
        weight: Callable[[Item], int] | None = None,
        max_weight: int = 0,
        runtime_of: Callable[[Item], Any] | None = None,
    ) -> None:
        """``weight`` and ``max_weight`` (optional) also bound a batch by the sum of its items'
        weights (jobs asked for, for dispatch), so a few requests for many jobs each do not
        make one huge transaction; a batch always takes at least one item. ``runtime_of`` gives
        the Runtime of an item: the batch's thread then takes one of the worker's database
        places (:func:`pandawms.core.dbthreads.run_db`) like any other database request.
        """
        self.work = work
        self.max_batch = max_batch
        self.weight = weight
        self.max_weight = max_weight
        self.runtime_of = runtime_of
        self.lanes: dict[Hashable, _Lane[Item, Result]] = {}

    def _take(self, pending: list[tuple[Item, asyncio.Future[Result]]]) -> int:
        """How many of the pending items the next batch takes."""
        count = min(len(pending), self.max_batch)
        if self.weight is None or self.max_weight <= 0:
            return count
        total = 0
        for index in range(count):
            total += self.weight(pending[index][0])
            if total > self.max_weight and index > 0:
                return index
        return count

    async def submit(self, key: Hashable, item: Item, parallel: int = 1) -> Result:
        """Queue ``item`` under ``key`` and wait for its outcome.

        ``parallel`` > 1 lets that many batches of the key run at once, for work whose
        transactions do not wait on each other (dispatch with ``SKIP LOCKED``): a request then
        waits for one batch, not for the one running and then its own.
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = _Lane()
        lane.pending.append((item, future))
        if lane.running < max(parallel, 1):
            lane.running += 1
            asyncio.ensure_future(self._drain(key, lane))
        return await future

    async def _drain(self, key: Hashable, lane: _Lane[Item, Result]) -> None:
        try:
            while lane.pending:
                size = self._take(lane.pending)
                batch = lane.pending[:size]
                del lane.pending[:size]
                items = [item for item, _ in batch]
                try:
                    if self.runtime_of is not None:
                        outcomes = await run_db(self.runtime_of(items[0]), self.work, key, items)
                    else:
                        outcomes = await to_thread.run_sync(self.work, key, items)
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"batch of {len(batch)} got {len(outcomes)} outcomes")
                except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                    outcomes = [exc] * len(batch)
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            lane.running -= 1
            if not lane.running:
                for _, future in lane.pending:  # left only when the loop is being torn down
                    future.cancel()
                lane.pending.clear()
                self.lanes.pop(key, None)


def one_transaction_or_each(
    engine: Engine,
    items: Sequence[Item],
    in_transaction: Callable[[Connection, Item], Result],
    alone: Callable[[Item], Result],
    what: str,
    around: Callable[[Connection], AbstractContextManager[Any]] | None = None,
) -> list[Any]:
    """``in_transaction`` for every item in one write transaction, in the order given.

    If the batch fails for what one item brought on (a value the database refuses, a deadlock
    with another worker's batch), it is rolled back and every item runs ``alone``, so only that
    item fails (its exception is its outcome). A busy or unreachable database fails the batch:
    the caller answers every request with a 503. Logs "<what> of N refused|deadlocked;
    retrying one by one" when it falls back. ``around(conn)``, when given, is entered in the
    shared transaction before the first item and left after the last, before the commit: work
    done once for the whole batch (reading every row at once, writing collected rows).
    """
    try:
        with write_tx(engine) as conn, around(conn) if around is not None else nullcontext():
            return [in_transaction(conn, item) for item in items]
    except BUSY_ERRORS as exc:
        if len(items) == 1 or not is_deadlock(exc):
            raise
        log.info("%s of %d deadlocked; retrying one by one", what, len(items))
    except Exception as exc:  # noqa: BLE001 - one item's trouble: retry one by one
        if len(items) == 1:
            return [exc]
        log.info("%s of %d refused (%s); retrying one by one", what, len(items), type(exc).__name__)
    out: list[Any] = []
    for item in items:
        try:
            out.append(alone(item))
        except Exception as exc:  # noqa: BLE001 - this item's own outcome
            out.append(exc)
    return out
