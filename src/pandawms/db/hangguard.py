"""A client-side deadline on every database round trip of a serving process.

A database that stops answering without closing its connections (a frozen server, a stalled
proxy or a network partition) is not noticed by the drivers: a statement waits in ``recv``
for as long as the freeze lasts, holding a request thread and a pooled connection, and the
server's own ``statement_timeout`` cannot fire in a server that does not run. TCP keepalives
do not help either while the peer's kernel still acknowledges.

The guard notes when each round trip (statement, commit, rollback, ping) starts and a watchdog
thread shuts down the socket of one that has run longer than ``timeout`` seconds. The waiting
driver call then fails at once with a disconnection error, SQLAlchemy throws the connection
away, and the request ends with the usual 503 + Retry-After. It is meant for the httpd, where
no request should wait that long; the daemon's long maintenance statements are not guarded.
SQLite needs none: it has no network, and waits on its lock at most its busy timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger("pandawms.db")


def _socket_of(dbapi_conn: Any) -> socket.socket | None:
    """A duplicate of the driver connection's socket (psycopg or PyMySQL), or None."""
    pgconn = getattr(dbapi_conn, "pgconn", None)
    if pgconn is not None:
        try:
            return socket.socket(fileno=os.dup(pgconn.socket))
        except (OSError, ValueError, AttributeError):
            return None
    sock = getattr(dbapi_conn, "_sock", None)
    if isinstance(sock, socket.socket):
        try:
            return socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return None
    return None


class HangGuard:
    """Tracks the round trips in progress on one engine and cuts those that overrun."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._started: dict[int, tuple[float, Any]] = {}
        self.cut = 0
        self._thread = threading.Thread(target=self._watch, name="pandawms-db-hangguard", daemon=True)
        self._thread.start()

    def enter(self, dbapi_conn: Any) -> None:
        """A round trip on ``dbapi_conn`` starts now."""
        self._started[id(dbapi_conn)] = (time.monotonic(), dbapi_conn)

    def leave(self, dbapi_conn: Any) -> None:
        """The round trip on ``dbapi_conn`` is over (answered or failed)."""
        self._started.pop(id(dbapi_conn), None)

    def _watch(self) -> None:
        step = min(0.5, self.timeout / 4)
        while True:
            time.sleep(step)
            now = time.monotonic()
            for key, (since, conn) in list(self._started.items()):
                if now - since > self.timeout and self._started.get(key, (None,))[0] == since:
                    self._started.pop(key, None)
                    self._cut(conn, now - since)

    def _cut(self, dbapi_conn: Any, waited: float) -> None:
        sock = _socket_of(dbapi_conn)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
            self.cut += 1
            log.error("database did not answer for %.1f s: connection cut, the request gets a 503", waited)
        except OSError:
            pass
        finally:
            sock.close()


def install_hang_guard(engine: Engine, timeout: float) -> HangGuard | None:
    """Guard every round trip of ``engine`` (not SQLite) with ``timeout`` seconds; 0 turns it off."""
    if timeout <= 0 or engine.dialect.name == "sqlite":
        return None
    guard = HangGuard(timeout)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(_conn: Any, cursor: Any, *_args: Any) -> None:
        guard.enter(cursor.connection)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, cursor: Any, *_args: Any) -> None:
        guard.leave(cursor.connection)

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        cursor = getattr(context, "cursor", None)
        if cursor is not None:
            guard.leave(cursor.connection)

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            guard.leave(dbapi_conn)

    dialect: Any = engine.dialect
    for name in ("do_commit", "do_rollback", "do_ping"):
        setattr(dialect, name, _guarded(guard, getattr(dialect, name)))
    return guard


def _guarded(guard: HangGuard, call: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(dbapi_conn: Any) -> Any:
        guard.enter(dbapi_conn)
        try:
            return call(dbapi_conn)
        finally:
            guard.leave(dbapi_conn)

    return run
