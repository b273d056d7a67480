"""GroupRunner: group commit on the event loop, with real work functions in real threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

import pytest

from pandawms.core.batching import GroupRunner

T = TypeVar("T")
TIMEOUT = 10.0


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh event loop, failing rather than hanging if something never ends."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), TIMEOUT)

    return asyncio.run(bounded())


class Recorder:
    """A work function that records every batch (key, items, thread) and doubles each item.

    ``block_first`` makes the first batch wait for :attr:`release`, so the test can queue
    more items while it runs; :attr:`started` is set when a batch begins.
    """

    def __init__(self, block_first: bool = False, pause: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        self.block_first = block_first
        self.pause = pause
        self.active = 0
        self.max_active = 0

    def __call__(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        with self.lock:
            first = not self.batches
            self.batches.append((key, list(items)))
            self.threads.add(threading.get_ident())
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.started.set()
            if self.block_first and first:
                assert self.release.wait(TIMEOUT), "the test never released the first batch"
            if self.pause:
                time.sleep(self.pause)
            return [outcome(key, item) for item in items]
        finally:
            with self.lock:
                self.active -= 1

    @property
    def sizes(self) -> list[int]:
        return [len(items) for _, items in self.batches]


def outcome(key: Hashable, item: Any) -> Any:
    """The result for one item: doubled, or its own exception for the items named "bad"."""
    if isinstance(item, str) and item.startswith("bad"):
        return ValueError(f"{key}:{item} refused")
    return (key, item * 2)


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


def test_outcomes_are_delivered_per_item_in_order() -> None:
    work = Recorder()
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in range(25)))

    assert run(main) == [("k", i * 2) for i in range(25)]
    # All 25 queued before the drain task first ran: one batch, one thread hop, off the loop.
    assert work.sizes == [25]
    assert threading.get_ident() not in work.threads


def test_an_item_exception_reaches_only_that_item() -> None:
    work = Recorder()
    runner: GroupRunner[Any, Any] = GroupRunner(work)
    items: list[Any] = [0, "bad-1", 2, 3, "bad-4", 5]

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in items), return_exceptions=True)

    results = run(main)
    assert work.sizes == [len(items)], "the test needs the good and bad items in one batch"
    for item, result in zip(items, results, strict=True):
        if isinstance(item, str):
            assert isinstance(result, ValueError) and str(result) == f"k:{item} refused"
        else:
            assert result == ("k", item * 2)
    assert runner.lanes == {}


def test_an_exception_of_the_whole_batch_reaches_every_item() -> None:
    calls: list[int] = []

    def broken(key: Hashable, items: Sequence[int]) -> list[Any]:
        calls.append(len(items))
        raise ConnectionError(f"database of {key} is gone")

    runner: GroupRunner[int, Any] = GroupRunner(broken)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("db", i) for i in range(7)), return_exceptions=True)

    results = run(main)
    assert calls == [7]
    assert all(isinstance(r, ConnectionError) and str(r) == "database of db is gone" for r in results)
    assert runner.lanes == {}

    # The lane recovers: the next request gets a batch of its own and its own answer.
    ok: GroupRunner[int, Any] = GroupRunner(Recorder())

    async def again() -> Any:
        return await ok.submit("db", 4)

    assert run(again) == ("db", 8)


def test_a_wrong_number_of_outcomes_fails_every_item_of_the_batch() -> None:
    def short(_key: Hashable, items: Sequence[int]) -> list[Any]:
        return list(items[:-1])

    runner: GroupRunner[int, Any] = GroupRunner(short)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in range(3)), return_exceptions=True)

    results = run(main)
    assert all(isinstance(r, RuntimeError) and str(r) == "batch of 3 got 2 outcomes" for r in results)


def test_items_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    work = Recorder(block_first=True)
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(runner.submit("k", 0))
        await asyncio.to_thread(work.started.wait, TIMEOUT)
        assert work.sizes == [1], "light load: the first request starts at once, alone"
        later = [asyncio.ensure_future(runner.submit("k", i)) for i in range(1, 6)]
        await wait_until(lambda: len(runner.lanes["k"].pending) == 5)
        assert runner.lanes["k"].running and work.sizes == [1], "nothing starts while a batch runs"
        work.release.set()
        return await asyncio.gather(first, *later)

    assert run(main) == [("k", i * 2) for i in range(6)]
    assert work.sizes == [1, 5]
    assert [items for _, items in work.batches] == [[0], [1, 2, 3, 4, 5]]
    assert work.max_active == 1
    assert runner.lanes == {}


def test_different_keys_never_share_a_batch_and_do_not_wait_for_each_other() -> None:
    work = Recorder(block_first=True)
    runner: GroupRunner[tuple[str, int], Any] = GroupRunner(work)

    def submit(key: str, i: int) -> Awaitable[Any]:
        return runner.submit(key, (key, i))

    async def main() -> tuple[list[Any], list[Any]]:
        # Key "a" holds the first batch, which blocks; key "b" must still be served meanwhile.
        a_first = asyncio.ensure_future(submit("a", 0))
        await asyncio.to_thread(work.started.wait, TIMEOUT)
        mixed = [asyncio.ensure_future(submit("ab"[i % 2], i)) for i in range(1, 9)]
        b_done = await asyncio.gather(*mixed[::2])  # the "b" items: 1, 3, 5, 7
        assert not a_first.done(), "key a's batch is still blocked"
        work.release.set()
        return [await a_first, *await asyncio.gather(*mixed[1::2])], b_done

    a_results, b_results = run(main)
    assert a_results == [("a", ("a", i) * 2) for i in (0, 2, 4, 6, 8)]
    assert b_results == [("b", ("b", i) * 2) for i in (1, 3, 5, 7)]
    for key, items in work.batches:
        assert {item_key for item_key, _ in items} == {key}, f"batch of {key} holds {items}"
    assert sorted((key, len(items)) for key, items in work.batches) == [("a", 1), ("a", 4), ("b", 4)]
    assert work.max_active == 2, "the two keys ran their batches at the same time"
    assert runner.lanes == {}


def test_max_batch_splits_a_long_queue_and_runs_one_batch_per_key_at_a_time() -> None:
    work = Recorder(pause=0.01)
    runner: GroupRunner[int, Any] = GroupRunner(work, max_batch=3)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in range(8)))

    assert run(main) == [("k", i * 2) for i in range(8)]
    assert [items for _, items in work.batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert work.max_active == 1


def test_max_weight_bounds_a_batch_by_its_items_weights() -> None:
    """Dispatch weighs a request by the jobs it asks for: a few bulk requests fill a batch.

    An item heavier than the bound still runs (alone), never waits for good.
    """
    work = Recorder(pause=0.01)
    runner: GroupRunner[int, Any] = GroupRunner(work, max_batch=100, weight=lambda item: item, max_weight=10)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in (4, 5, 1, 30, 2, 9, 1, 1)))

    assert run(main) == [("k", i * 2) for i in (4, 5, 1, 30, 2, 9, 1, 1)]
    assert [items for _, items in work.batches] == [[4, 5, 1], [30], [2], [9, 1], [1]]


def test_the_lane_exists_while_busy_and_is_removed_once_idle() -> None:
    work = Recorder(block_first=True)
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        assert runner.lanes == {}
        pending = asyncio.ensure_future(runner.submit("k", 1))
        await asyncio.to_thread(work.started.wait, TIMEOUT)
        assert list(runner.lanes) == ["k"] and runner.lanes["k"].running
        work.release.set()
        first = await pending
        await wait_until(lambda: not runner.lanes)
        # Idle requests one after the other: each starts its own lane and batch at once.
        second = await runner.submit("k", 2)
        assert runner.lanes == {}
        third = await runner.submit("k", 3)
        assert runner.lanes == {}
        return [first, second, third]

    assert run(main) == [("k", 2), ("k", 4), ("k", 6)]
    assert work.sizes == [1, 1, 1]


def test_a_cancelled_request_does_not_disturb_its_batch() -> None:
    work = Recorder(block_first=True)
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(runner.submit("k", 0))
        await asyncio.to_thread(work.started.wait, TIMEOUT)
        later = [asyncio.ensure_future(runner.submit("k", i)) for i in (1, 2, 3)]
        await wait_until(lambda: len(runner.lanes["k"].pending) == 3)
        later[1].cancel()  # a client that went away while its item waited
        work.release.set()
        results = await asyncio.gather(first, *later, return_exceptions=True)
        await wait_until(lambda: not runner.lanes)
        return results

    results = run(main)
    assert results[0] == ("k", 0) and results[1] == ("k", 2) and results[3] == ("k", 6)
    assert isinstance(results[2], asyncio.CancelledError)
    assert work.sizes == [1, 3]


@pytest.mark.parametrize("n", [1, 200, 201])
def test_default_max_batch_is_200(n: int) -> None:
    work = Recorder()
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.submit("k", i) for i in range(n)))

    assert run(main) == [("k", i * 2) for i in range(n)]
    assert work.sizes == ([n] if n <= 200 else [200, n - 200])


def test_parallel_two_runs_a_second_batch_while_the_first_is_blocked() -> None:
    work = Recorder(block_first=True)
    runner: GroupRunner[int, Any] = GroupRunner(work)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(runner.submit("k", 0, parallel=2))
        await asyncio.to_thread(work.started.wait, TIMEOUT)
        second = asyncio.ensure_future(runner.submit("k", 1, parallel=2))
        assert await second == ("k", 2), "the second batch ran while the first was blocked"
        assert not first.done()
        work.release.set()
        return [await first]

    assert run(main) == [("k", 0)]
    assert work.max_active == 2
    assert runner.lanes == {}


def _counter_table(url: str) -> Any:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS batching_items"))
        conn.execute(text("CREATE TABLE batching_items (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO batching_items (id, value) VALUES (1, 0), (2, 0)"))
    return engine


def test_one_transaction_or_each_lets_only_the_refused_item_fail(tmp_path: Any) -> None:
    """A real constraint violation rolls the batch back; each item then runs alone."""
    from sqlalchemy import text

    from pandawms.core.batching import one_transaction_or_each

    engine = _counter_table(f"sqlite:///{tmp_path / 'b.sqlite'}")
    statement = text("INSERT INTO batching_items (id, value) VALUES (:id, 1)")

    def in_tx(conn: Any, item: int) -> int:
        conn.execute(statement, {"id": item})
        return item

    def alone(item: int) -> int:
        with engine.begin() as conn:
            return in_tx(conn, item)

    outcomes = one_transaction_or_each(engine, [10, 2, 11], in_tx, alone, "test batch")
    assert outcomes[0] == 10 and outcomes[2] == 11
    assert type(outcomes[1]).__name__ == "IntegrityError", "id 2 exists: only that item fails"
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM batching_items ORDER BY id"))]
    assert ids == [1, 2, 10, 11], "the other items were written, each once"
    assert (
        one_transaction_or_each(engine, [2], in_tx, alone, "test batch")[0].__class__.__name__
        == "IntegrityError"
    )
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_real_deadlock_is_recognised(backend: str) -> None:
    """Two transactions locking two rows in opposite orders: the loser's error is a deadlock."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from pandawms.db.engine import BUSY_ERRORS, is_deadlock
    from tests.dbs import BACKENDS

    engine = _counter_table(BACKENDS[backend].require())
    update = text("UPDATE batching_items SET value = value + 1 WHERE id = :id")
    both_hold = threading.Barrier(2)
    errors: list[BaseException] = []

    def cross(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(update, {"id": first})
                both_hold.wait(TIMEOUT)
                conn.execute(update, {"id": second})
        except OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cross, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 60)
    engine.dispose()
    assert len(errors) == 1, "the database broke the deadlock by failing one transaction"
    assert isinstance(errors[0], BUSY_ERRORS) and is_deadlock(errors[0])
    assert not is_deadlock(OperationalError("SELECT 1", {}, Exception("connection lost")))
