"""Logging: one line format everywhere, one file per component, reopened on SIGHUP.

Files are opened in append mode and reopened when :func:`reopen_logs` runs (the services call
it on SIGHUP), so logrotate can move them away and signal the service: no restart, no lost line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from pandawms.config import mask_secrets

FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"
_handlers: list[ReopenableFileHandler] = []
_lock = threading.Lock()


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler whose file can be reopened under its lock (after rotation)."""

    def reopen(self) -> None:
        """Close the current stream and open the path again (a new file if it was moved)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


class BufferedFileHandler(ReopenableFileHandler):
    """A file handler that writes its lines in batches, from its own thread, every ``interval`` s.

    The access log has a line for every request. Written one by one, each line was a ``write(2)``
    on the event loop, and logging it some 6 % of a worker's Python time under a heartbeat load
    (py-spy, benchmarks/README.md). Here a line is formatted and kept; a thread of the process
    writes what was kept every ``interval`` seconds (or when ``max_lines`` wait), so a line
    reaches the file at most that late, and none is lost: a reopen or close writes the waiting
    lines to the file they belong to first, and so does the logging module's shutdown at exit.
    The thread starts with the first line of each process (the httpd master sets logging up
    before it forks its workers; a fork keeps no thread).
    """

    def __init__(self, path: str, interval: float = 0.2, max_lines: int = 512) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.interval = interval
        self.max_lines = max_lines
        self._pending: list[str] = []
        self._pid = 0
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - the logging module's own policy for a bad record
            self.handleError(record)
            return
        pid = os.getpid()
        if pid != self._pid:
            self._pending = []  # lines of the parent process are the parent's to write
            self._pid = pid
            threading.Thread(target=self._write_periodically, name="log-writer", daemon=True).start()
        self._pending.append(line)
        if len(self._pending) >= self.max_lines:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the kept lines (called under the handler's lock)."""
        if not self._pending or self.stream is None:
            return
        lines, self._pending = self._pending, []
        self.stream.write("".join(lines))
        self.stream.flush()

    def _write_waiting(self) -> None:
        """:meth:`_write_pending` under the handler's lock (from any thread)."""
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def _write_periodically(self) -> None:
        pid = os.getpid()
        while self._pid == pid and not self._closed:
            time.sleep(self.interval)
            try:
                self._write_waiting()
            except OSError:
                pass  # a full disk: the lines are dropped, the server keeps serving

    def flush(self) -> None:
        self._write_waiting()
        super().flush()

    def reopen(self) -> None:
        self._write_waiting()
        super().reopen()

    def close(self) -> None:
        self._write_waiting()
        self._closed = True  # its writer thread ends
        super().close()


class _SecondsFormatter(logging.Formatter):
    """The standard access line, its time stamp's date and time made once a second."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


class MaskingFormatter(logging.Formatter):
    """The standard line with secrets masked: a database or broker URL in a message or in an
    exception's text (drivers and SQLAlchemy quote them) is written as ``user:***@host``."""

    def format(self, record: logging.LogRecord) -> str:

        return mask_secrets(super().format(record))


def _file_handler(path: str, fmt: logging.Formatter) -> ReopenableFileHandler:
    handler = ReopenableFileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(fmt)
    with _lock:
        _handlers.append(handler)
    return handler


def setup_logging(level: str = "INFO", log_dir: str = "", component: str = "pandawms") -> None:
    """Configure the root logger for this process.

    Without ``log_dir`` everything goes to stderr. With it: ``panda-<component>.log`` for the
    component's messages and ``panda-<component>-access.log`` for the access log (one line per
    request: id, client, method, path, status, bytes, duration).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    with _lock:
        _handlers.clear()
    fmt = MaskingFormatter(FORMAT)
    access = logging.getLogger("pandawms.access")
    for handler in list(access.handlers):
        access.removeHandler(handler)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        root.addHandler(_file_handler(os.path.join(log_dir, f"panda-{component}.log"), fmt))
        buffered = BufferedFileHandler(os.path.join(log_dir, f"panda-{component}-access.log"))
        buffered.setFormatter(_SecondsFormatter("%(asctime)s %(process)d %(message)s"))
        with _lock:
            _handlers.append(buffered)
        access.addHandler(buffered)
        access.propagate = False
    else:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
        access.propagate = True
    root.setLevel(level)
    access.setLevel(level)


def reopen_logs() -> int:
    """Reopen every log file this process writes; returns how many."""
    with _lock:
        handlers = list(_handlers)
    for handler in handlers:
        handler.reopen()
    return len(handlers)
