"""Logging: one line format everywhere, one file per component, reopened on SIGHUP.

Files are opened in append mode and reopened when :func:`reopen_logs` runs (the services call
it on SIGHUP), so logrotate can move them away and signal the service: no restart, no lost line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

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
        access.addHandler(
            _file_handler(
                os.path.join(log_dir, f"panda-{component}-access.log"),
                logging.Formatter("%(asctime)s %(process)d %(message)s"),
            )
        )
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
