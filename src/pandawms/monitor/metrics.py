"""Prometheus metrics: request counters and latency histograms summed over the httpd workers.

``pandawms httpd`` forks N worker processes and a scrape of /metrics reaches only one of them,
so each process keeps its counters in its own memory-mapped file under
``<data_dir>/metrics/`` and the process that answers the scrape adds up the files of all its
siblings. The :class:`Registry` belongs to a runtime (:func:`registry_of`, bound by the app when
it is made and passed on explicitly), so two apps in one process count apart, each in its own
file. Counting is a write into a mapped page (no lock between processes, no system call),
so it costs the request path about a microsecond. Files of workers that died stay counted
while their master lives (Prometheus counters must not go down); files of finished runs are
removed. ``pandawms serve`` is one process and simply reads its own file.

When the directory cannot be written the counters stay in process memory and the scrape shows
only that process (logged once).

Database-derived metrics (jobs by status and queue, daemon task runs) are read at scrape time
by :mod:`pandawms.monitor.queries`, cached for a few seconds, and are not per process.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import mmap
import os
import struct
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pandawms.core.runtime import Runtime
from pandawms.db.engine import connections_opened, statements_sent

log = logging.getLogger("pandawms.monitor")

#: Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_MAGIC = b"PWMETR01"
_HEADER = struct.Struct("<8sQQQQ")  # magic, pid, ppid, process start ticks, bytes used
_INITIAL = 64 * 1024
_ENTRY_HEAD = struct.Struct("<I")
_VALUE = struct.Struct("<d")


def _start_ticks(pid: int) -> int:
    """Process start time in clock ticks since boot (Linux), so a reused PID is not mistaken."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int, ticks: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not ticks or not _start_ticks(pid) or _start_ticks(pid) == ticks


class _FileStore:
    """One registry's counters in ``<dir>/<pid>-<tag>.metrics``: key -> float64, append-only keys."""

    def __init__(self, directory: Path, tag: str) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.path = directory / f"{self.pid}-{tag}.metrics"
        self.offsets: dict[str, int] = {}
        directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - lives as long as the process
        self._file.truncate(_INITIAL)
        self._map = mmap.mmap(self._file.fileno(), _INITIAL)
        self._used = _HEADER.size
        _HEADER.pack_into(self._map, 0, _MAGIC, self.pid, os.getppid(), _start_ticks(self.pid), self._used)
        _remove_stale(directory, self.path)

    def _grow(self, need: int) -> None:
        size = len(self._map)
        while size < need:
            size *= 2
        self._map.flush()
        self._map.close()
        self._file.truncate(size)
        self._map = mmap.mmap(self._file.fileno(), size)

    def add(self, key: str, amount: float) -> None:
        offset = self.offsets.get(key)
        if offset is None:
            raw = key.encode()
            padded = (len(raw) + 4 + 7) // 8 * 8
            entry = padded + 8
            if self._used + entry > len(self._map):
                self._grow(self._used + entry)
            start = self._used
            _ENTRY_HEAD.pack_into(self._map, start, len(raw))
            self._map[start + 4 : start + 4 + len(raw)] = raw
            offset = start + padded
            _VALUE.pack_into(self._map, offset, 0.0)
            self._used += entry
            # Readers see the new entry only once it is complete.
            _HEADER.pack_into(
                self._map, 0, _MAGIC, self.pid, os.getppid(), _start_ticks(self.pid), self._used
            )
            self.offsets[key] = offset
        _VALUE.pack_into(self._map, offset, _VALUE.unpack_from(self._map, offset)[0] + amount)

    def set(self, key: str, value: float) -> None:
        self.add(key, 0.0)
        _VALUE.pack_into(self._map, self.offsets[key], value)


class _MemoryStore:
    """Fallback when no file can be written: this process only."""

    def __init__(self) -> None:
        self.values: dict[str, float] = defaultdict(float)

    def add(self, key: str, amount: float) -> None:
        self.values[key] += amount

    def set(self, key: str, value: float) -> None:
        self.values[key] = value


def _parse(data: bytes) -> tuple[int, int, int, dict[str, float]] | None:
    """(pid, ppid, start ticks, values) of one metrics file, or None when it is not one."""
    if len(data) < _HEADER.size:
        return None
    magic, pid, ppid, ticks, used = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        return None
    values: dict[str, float] = {}
    pos = _HEADER.size
    used = min(used, len(data))
    while pos + 4 <= used:
        (length,) = _ENTRY_HEAD.unpack_from(data, pos)
        padded = (length + 4 + 7) // 8 * 8
        if pos + padded + 8 > used:
            break
        key = data[pos + 4 : pos + 4 + length].decode(errors="replace")
        values[key] = _VALUE.unpack_from(data, pos + padded)[0]
        pos += padded + 8
    return pid, ppid, ticks, values


def _read(path: Path) -> tuple[int, int, int, dict[str, float]] | None:
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _remove_stale(directory: Path, keep: Path) -> None:
    """Delete files whose process and parent are both gone (an earlier run of the server)."""
    for path in directory.glob("*.metrics"):
        if path == keep:
            continue
        parsed = _read(path)
        if parsed is None:
            continue
        pid, ppid, ticks, _ = parsed
        if not _alive(pid, ticks) and (ppid <= 1 or not _alive(ppid, 0)):
            with contextlib.suppress(OSError):
                path.unlink()


def _is_forked_worker() -> bool:
    """True in an httpd worker (its siblings' files count even after they died)."""
    return "pandawms.httpd.worker" in sys.modules


def metrics_directory(rt: Runtime) -> Path | None:
    """``<data_dir>/metrics`` of the runtime's settings (None without a data directory)."""
    data_dir = rt.settings.data_dir
    return Path(data_dir) / "metrics" if data_dir else None


class Registry:
    """One runtime's request metrics in this process, and the code that adds up every process's.

    The file is opened at the first count (in the process that counts: an httpd worker opens
    its own after the fork), in ``directory``; without one, or when it cannot be written, the
    counts stay in memory and a scrape shows this process only.
    """

    def __init__(self, directory: Path | None, engine: Any = None) -> None:
        self._lock = threading.Lock()
        self._store: _FileStore | _MemoryStore | None = None
        self._pid = 0
        self._wanted = directory
        self.directory: Path | None = None
        self.engine = engine
        self._warned = False

    def _open(self) -> None:
        self._pid = os.getpid()
        if self._wanted is not None:
            try:
                self._store = _FileStore(self._wanted, f"{id(self):x}")
                self.directory = self._wanted
                return
            except OSError as exc:
                if not self._warned:
                    log.warning(
                        "metrics: cannot write %s (%s); counting in this process only", self._wanted, exc
                    )
                    self._warned = True
        self._store = _MemoryStore()
        self.directory = None

    def _ensure(self) -> _FileStore | _MemoryStore:
        if self._store is None or self._pid != os.getpid():  # first count, or forked since
            self._open()
        assert self._store is not None
        return self._store

    def record(self, method: str, status: int, seconds: float) -> None:
        """Count one request of ``method`` that ended with ``status`` after ``seconds``.

        Never raises: metrics must not fail a request (a failure is logged).
        """
        try:
            self._record(method, status, seconds)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            log.exception("metrics: could not record a request")

    def _record(self, method: str, status: int, seconds: float) -> None:
        with self._lock:
            store = self._ensure()
            store.add(f"req\t{method}\t{status}", 1.0)
            store.add(f"sum\t{method}", seconds)
            store.add(f"bkt\t{method}\t{bisect.bisect_left(BUCKETS, seconds)}", 1.0)
            self._pool_gauges(store)

    def _pool_gauges(self, store: _FileStore | _MemoryStore) -> None:
        pool = getattr(self.engine, "pool", None)
        if pool is None:
            return
        try:
            store.set("pool_out", float(pool.checkedout()))
            store.set("pool_size", float(pool.size()))
        except (AttributeError, TypeError):
            pass
        try:
            store.set("db_connections_opened", float(connections_opened(self.engine)))
            statements, commits = statements_sent(self.engine)
            store.set("db_statements", float(statements))
            store.set("db_commits", float(commits))
        except TypeError:  # not an Engine (weak references need one)
            pass

    def collect(self) -> tuple[dict[str, float], dict[str, float], int]:
        """(summed counters, summed live gauges, processes counted) over this server's processes."""
        with self._lock:
            store = self._ensure()
            self._pool_gauges(store)
            if isinstance(store, _MemoryStore) or self.directory is None:
                values = dict(store.values) if isinstance(store, _MemoryStore) else {}
                return _split(values.items(), values.items()) + (1,)
            directory = self.directory
        me, my_parent = os.getpid(), os.getppid()
        counters: dict[str, float] = defaultdict(float)
        gauges: dict[str, float] = defaultdict(float)
        processes = 0
        for path in directory.glob("*.metrics"):
            parsed = _read(path)
            if parsed is None:
                continue
            pid, ppid, ticks, values = parsed
            alive = pid == me or _alive(pid, ticks)
            sibling = _is_forked_worker() and ppid == my_parent and my_parent > 1
            if not alive and not sibling:
                continue
            processes += 1
            live_counters, live_gauges = _split(values.items(), values.items() if alive else ())
            for key, value in live_counters.items():
                counters[key] += value
            for key, value in live_gauges.items():
                gauges[key] += value
        return dict(counters), dict(gauges), processes


def _split(
    counter_items: Iterable[tuple[str, float]], gauge_items: Iterable[tuple[str, float]]
) -> tuple[dict[str, float], dict[str, float]]:
    counters = {k: v for k, v in counter_items if not k.startswith("pool_")}
    gauges = {k: v for k, v in gauge_items if k.startswith("pool_")}
    return counters, gauges


def registry_of(rt: Runtime) -> Registry:
    """The runtime's metrics: made once per runtime (the app binds it when it is made)."""
    return rt.kept("monitor.metrics", lambda: Registry(metrics_directory(rt), rt.engine))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def request_lines(registry: Registry) -> list[str]:
    """The exposition lines of ``registry``'s request metrics and pool gauges, summed over processes."""
    counters, gauges, processes = registry.collect()
    requests: dict[tuple[str, str], float] = {}
    sums: dict[str, float] = {}
    buckets: dict[str, list[float]] = defaultdict(lambda: [0.0] * (len(BUCKETS) + 1))
    for key, value in counters.items():
        parts = key.split("\t")
        if parts[0] == "req" and len(parts) == 3:
            requests[(parts[1], parts[2])] = value
        elif parts[0] == "sum" and len(parts) == 2:
            sums[parts[1]] = value
        elif parts[0] == "bkt" and len(parts) == 3 and parts[2].isdigit():
            index = int(parts[2])
            if index <= len(BUCKETS):
                buckets[parts[1]][index] += value
    lines = [
        "# HELP pandawms_http_requests_total HTTP requests served, by API method (or path kind) and status.",
        "# TYPE pandawms_http_requests_total counter",
    ]
    for (method, status), value in sorted(requests.items()):
        lines.append(
            f'pandawms_http_requests_total{{method="{_label(method)}",status="{status}"}} {_num(value)}'
        )
    lines += [
        "# HELP pandawms_http_request_duration_seconds Time to answer a request, by API method.",
        "# TYPE pandawms_http_request_duration_seconds histogram",
    ]
    for method in sorted(buckets):
        counts = buckets[method]
        running = 0.0
        for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(
                f'pandawms_http_request_duration_seconds_bucket{{method="{_label(method)}",le="{le}"}} '
                f"{_num(running)}"
            )
        lines.append(
            f'pandawms_http_request_duration_seconds_sum{{method="{_label(method)}"}} {sums.get(method, 0.0)!r}'
        )
        lines.append(
            f'pandawms_http_request_duration_seconds_count{{method="{_label(method)}"}} {_num(running)}'
        )
    lines += [
        "# HELP pandawms_db_pool_checked_out Database connections in use, summed over the server's processes.",
        "# TYPE pandawms_db_pool_checked_out gauge",
        f"pandawms_db_pool_checked_out {_num(gauges.get('pool_out', 0.0))}",
        "# HELP pandawms_db_pool_size Configured pool size, summed over the server's processes.",
        "# TYPE pandawms_db_pool_size gauge",
        f"pandawms_db_pool_size {_num(gauges.get('pool_size', 0.0))}",
        "# HELP pandawms_db_connections_opened_total Database connections opened by the server's pools,"
        " summed over its processes (flat in steady use: every request reuses a pooled connection).",
        "# TYPE pandawms_db_connections_opened_total counter",
        f"pandawms_db_connections_opened_total {_num(counters.get('db_connections_opened', 0.0))}",
        "# HELP pandawms_db_statements_total SQL statements sent to the database (one per execute or"
        " executemany), summed over the server's processes.",
        "# TYPE pandawms_db_statements_total counter",
        f"pandawms_db_statements_total {_num(counters.get('db_statements', 0.0))}",
        "# HELP pandawms_db_commits_total Transactions committed, summed over the server's processes.",
        "# TYPE pandawms_db_commits_total counter",
        f"pandawms_db_commits_total {_num(counters.get('db_commits', 0.0))}",
        "# HELP pandawms_metrics_processes Server processes whose request counters are included.",
        "# TYPE pandawms_metrics_processes gauge",
        f"pandawms_metrics_processes {processes}",
    ]
    return lines
