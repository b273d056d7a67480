"""Request counters shared by all worker processes, and the status line built from them.

Each worker owns one row of a shared-memory array (requests, bytes, requests in flight), so
counting needs no lock; the master sums the rows to produce the line systemd shows.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

_FIELDS = 3  # requests, bytes, in flight


class SharedStats:
    """Per-worker counters in shared memory, created by the master before it forks."""

    def __init__(self, workers: int, threads_per_worker: int) -> None:
        self.workers = workers
        self.threads = threads_per_worker
        self._array: Any = multiprocessing.RawArray("q", workers * _FIELDS)
        self._slot = 0

    def bind(self, slot: int) -> None:
        """Called in a worker after fork: this process writes row ``slot``."""
        self._slot = slot * _FIELDS

    def begin(self) -> None:
        """A request started."""
        self._array[self._slot + 2] += 1

    def end(self, sent_bytes: int) -> None:
        """A request finished, having sent ``sent_bytes``."""
        base = self._slot
        self._array[base] += 1
        self._array[base + 1] += sent_bytes
        self._array[base + 2] -= 1

    def reset_slot(self, slot: int) -> None:
        """A replaced worker starts with nothing in flight (its totals are kept)."""
        self._array[slot * _FIELDS + 2] = 0

    def totals(self) -> tuple[int, int, int]:
        """(requests, bytes, in flight) over all workers."""
        arr = self._array
        requests = sum(arr[i] for i in range(0, len(arr), _FIELDS))
        sent = sum(arr[i] for i in range(1, len(arr), _FIELDS))
        busy = sum(max(arr[i], 0) for i in range(2, len(arr), _FIELDS))
        return requests, sent, busy


@dataclass
class StatusLine:
    """Turns successive totals into the line ``systemctl status`` shows."""

    stats: SharedStats
    _last: tuple[float, int, int] | None = None

    def render(self, now: float | None = None) -> str:
        """``Total requests: N; Idle/Busy workers I/B; Requests/sec: R; Bytes served/sec: X``."""
        now = time.monotonic() if now is None else now
        requests, sent, busy = self.stats.totals()
        rate, byte_rate = 0.0, 0.0
        if self._last is not None:
            elapsed = max(now - self._last[0], 1e-6)
            rate = (requests - self._last[1]) / elapsed
            byte_rate = (sent - self._last[2]) / elapsed
        self._last = (now, requests, sent)
        slots = self.stats.workers * self.stats.threads
        idle = max(slots - busy, 0)
        return (
            f"Total requests: {requests}; Idle/Busy workers {idle}/{busy}; "
            f"Requests/sec: {rate:.3g}; Bytes served/sec: {_human(byte_rate)}/sec"
        )


def _human(value: float) -> str:
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"
