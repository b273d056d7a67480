"""The runtime's cache: fresh, stale-while-revalidate, kept objects, and forgetting by kind."""

from __future__ import annotations

import threading
import time

from pandawms.infra.ttlcache import TTLCache, kind_of


def test_a_fresh_answer_is_reused_and_a_stale_one_served_while_refreshed() -> None:
    cache = TTLCache()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("k", compute, ttl=60) == 1
    assert cache.get("k", compute, ttl=60) == 1
    assert calls == [1]
    # Older than ttl but within ttl + stale: the old answer at once, a new one computed behind it.
    assert cache.get("k", compute, ttl=0, stale=60) == 1
    deadline = time.monotonic() + 5
    while cache.peek("k", 60) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.peek("k", 60) == 2


def test_a_kept_object_is_made_once_whoever_asks() -> None:
    cache = TTLCache()
    made: list[object] = []
    start = threading.Barrier(8)

    def make() -> object:
        time.sleep(0.05)
        made.append(object())
        return made[-1]

    seen: list[object] = []

    def ask() -> None:
        start.wait()
        seen.append(cache.keep(("thing", 1), make))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and all(s is made[0] for s in seen)


def test_put_peek_and_forgetting_by_kind() -> None:
    cache = TTLCache()
    cache.put(("sent", "SITE_A"), 3)
    cache.put(("sent", "SITE_B"), 4)
    cache.put("queues", [])
    cache.put(("old",), 1, at=time.monotonic() - 100)
    assert cache.peek(("sent", "SITE_A"), 5) == 3
    assert cache.peek(("old",), 5) is None and cache.peek(("old",), 1000) == 1
    assert cache.kinds() == {"sent", "queues", "old"}
    cache.drop_kind("sent")
    assert cache.kinds() == {"queues", "old"}
    cache.drop("queues")
    assert cache.peek("queues", 5) is None
    assert kind_of(("a", 1)) == "a" and kind_of("b") == "b" and kind_of(()) == ()
