"""A small in-process cache for answers that are expensive to compute and may be a little old."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class TTLCache:
    """Per-process cache with stale-while-revalidate (one background refresh per key at a time).

    A fresh answer (younger than ``ttl``) is returned as it is; a stale one (younger than
    ``ttl + stale``) is returned at once while one background thread recomputes it, so a reader
    never waits on a refresh; an older or missing one is computed in the foreground, once per key
    however many threads ask at the same moment.
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

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
