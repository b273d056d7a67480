"""A small in-process cache for answers that are expensive to compute and may be a little old.

Each :class:`pandawms.core.runtime.Runtime` holds one (its per-process state): answers reused
for a few seconds, answers served stale while they are refreshed, and objects made once per
runtime (a DDM client, a cipher, a limiter) all live in it under keys that say what they are.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


def kind_of(key: Hashable) -> Hashable:
    """What a key names: the key itself, or the first element of a tuple key."""
    return key[0] if isinstance(key, tuple) and key else key


class TTLCache:
    """Cache with stale-while-revalidate (one background refresh per key at a time).

    A fresh answer (younger than ``ttl``) is returned as it is; a stale one (younger than
    ``ttl + stale``) is returned at once while one background thread recomputes it, so a reader
    never waits on a refresh; an older or missing one is computed in the foreground, once per key
    however many threads ask at the same moment. ``ttl=math.inf`` makes a value that is computed
    once and kept (see :meth:`keep`).
    """

    def __init__(self) -> None:
        self._data: dict[Hashable, tuple[float, Any]] = {}
        self._busy: set[Hashable] = set()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = defaultdict(threading.Lock)

    def get(self, key: Hashable, compute: Callable[[], T], ttl: float, stale: float = 0.0) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
            if hit is not None and now - hit[0] < ttl + stale:
                if key not in self._busy:
                    self._busy.add(key)
                    threading.Thread(target=self._refresh, args=(key, compute), daemon=True).start()
                return hit[1]
            key_lock = self._key_locks[key]
        with key_lock:  # one computation per key; the others wait for its answer
            with self._lock:
                hit = self._data.get(key)
                if hit is not None and time.monotonic() - hit[0] < ttl:
                    return hit[1]
            value = compute()
            with self._lock:
                self._data[key] = (time.monotonic(), value)
            return value

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
            with self._lock:
                self._data[key] = (time.monotonic(), value)
        except Exception:  # noqa: BLE001 - the next request computes in the foreground
            pass
        finally:
            with self._lock:
                self._busy.discard(key)

    def keep(self, key: Hashable, make: Callable[[], T]) -> T:
        """The object kept under ``key``, made by ``make()`` the first time (once, whoever asks)."""
        with self._lock:  # the common case, without the per-key lock
            hit = self._data.get(key)
            if hit is not None:
                return hit[1]
        return self.get(key, make, math.inf)

    def peek(self, key: Hashable, ttl: float) -> Any | None:
        """The value under ``key`` if it is younger than ``ttl`` seconds, else None."""
        with self._lock:
            hit = self._data.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        return None

    def put(self, key: Hashable, value: Any, at: float | None = None) -> None:
        """Store ``value`` under ``key`` (``at``: the monotonic time it was computed, default now)."""
        with self._lock:
            self._data[key] = (time.monotonic() if at is None else at, value)

    def drop(self, key: Hashable) -> None:
        """Forget ``key`` (the next reader computes it again)."""
        with self._lock:
            self._data.pop(key, None)

    def drop_kind(self, kind: Hashable) -> None:
        """Forget every key of ``kind`` (see :func:`kind_of`)."""
        with self._lock:
            for key in [k for k in self._data if kind_of(k) == kind]:
                del self._data[key]

    def kinds(self) -> set[Hashable]:
        """The kinds of the keys held (for tests and for a look at what a process keeps)."""
        with self._lock:
            return {kind_of(k) for k in self._data}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
