"""Engines per backend, set up so that every backend gives the same guarantees.

SQLite: WAL journal, a long busy timeout, and write transactions that take the write lock at
BEGIN (``BEGIN IMMEDIATE``) so two writers never interleave and dispatch needs no row locks.
PostgreSQL and MariaDB: READ COMMITTED, pre-ping, a fixed pool per process.

Every pool is bounded (``pool_size + max_overflow``) and a checkout waits at most
``pool_timeout`` seconds, then raises :class:`sqlalchemy.exc.TimeoutError`; the HTTP layer turns
that into "retry later" (:data:`BUSY_ERRORS`), so a slow database makes clients back off
instead of piling requests up in the server.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
import weakref
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from pandawms.config import normalise_url


def backend_name(engine: Engine) -> str:
    """'sqlite', 'postgresql', 'mysql' (MariaDB too) or 'oracle'."""
    return engine.dialect.name


def make_engine(
    url: str,
    pool_size: int = 10,
    max_overflow: int = 5,
    echo: bool = False,
    pool_timeout: float = 10.0,
    statement_timeout_ms: int = 0,
    connect_timeout: int = 5,
) -> Engine:
    """Create the engine for ``url`` with the per-backend settings above.

    ``statement_timeout_ms`` (PostgreSQL ``statement_timeout``, MariaDB ``max_statement_time``;
    0 for none) makes the database cancel a statement that runs or waits on a lock longer, so it
    cannot keep a pooled connection for good. ``connect_timeout`` bounds opening a session
    (TCP and the login exchange) on both. PostgreSQL sessions use TCP keepalives, and MariaDB
    ones a read/write timeout, so a database host that vanishes is noticed; a database that
    still holds the connection but does not answer is the business of
    :mod:`pandawms.db.hangguard`.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    kind = parsed.get_backend_name()
    if kind == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_args={"timeout": 60, "check_same_thread": False},
        )
        _setup_sqlite(engine)
        _count_connects(engine)
        return engine
    kwargs: dict[str, Any] = {
        "echo": echo,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
        "pool_recycle": 3600,
    }
    if kind in ("postgresql", "mysql", "mariadb"):
        kwargs["isolation_level"] = "READ COMMITTED"
    if kind == "postgresql":
        pg_args: dict[str, Any] = {
            "connect_timeout": max(int(connect_timeout), 1),
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if statement_timeout_ms > 0:
            pg_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
        kwargs["connect_args"] = pg_args
    if kind in ("mysql", "mariadb"):
        kwargs["connect_args"] = {
            "charset": "utf8mb4",
            "connect_timeout": max(int(connect_timeout), 1),
            "read_timeout": MYSQL_IO_TIMEOUT_S,
            "write_timeout": MYSQL_IO_TIMEOUT_S,
        }
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    if kind in ("mysql", "mariadb") and statement_timeout_ms > 0:
        _mariadb_statement_timeout(engine, statement_timeout_ms)
    _count_connects(engine)
    return engine


#: Longest a MariaDB client read or write may wait (the driver has no per-statement timeout):
#: long enough for the daemon's biggest maintenance statements.
MYSQL_IO_TIMEOUT_S = 900


def _mariadb_statement_timeout(engine: Engine, statement_timeout_ms: int) -> None:
    """MariaDB's ``max_statement_time`` (seconds) on every session; MySQL has no equivalent."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if "mariadb" not in str(dbapi_conn.get_server_info()).lower():
            return
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET SESSION max_statement_time = {statement_timeout_ms / 1000:.3f}")


class _Tally:
    """A count an engine's event listener bumps (connections opened, statements, commits)."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self.value = 0

    def bump(self, *_args: Any) -> None:
        self.value = next(self._ticks)  # next() of a count is atomic: no lock on the hot path


class _Counts:
    """An engine's tallies: connections its pool opened, statements (cursor executions; an
    executemany is one) and commits it sent."""

    def __init__(self) -> None:
        self.opened = _Tally()
        self.statements = _Tally()
        self.commits = _Tally()


_COUNTS: weakref.WeakKeyDictionary[Engine, _Counts] = weakref.WeakKeyDictionary()


def _count_connects(engine: Engine) -> None:
    counts = _COUNTS[engine] = _Counts()
    event.listen(engine, "connect", counts.opened.bump)
    event.listen(engine, "before_cursor_execute", counts.statements.bump)
    event.listen(engine, "commit", counts.commits.bump)


def connections_opened(engine: Engine) -> int:
    """Connections ``engine`` has opened so far (0 for an engine not made by :func:`make_engine`).

    With threads capped to the pool (``Settings.request_threads``) this stays at the pool size
    in steady use; a count that keeps rising means connections are being opened and closed per
    request (overflow churn). Exposed in ``/metrics`` as ``pandawms_db_connections_opened_total``.
    """
    counts = _COUNTS.get(engine)
    return counts.opened.value if counts is not None else 0


def open_pool(engine: Engine, count: int) -> int:
    """Open ``count`` of the pool's connections now (at most its size); returns how many it holds.

    They are checked out together, so the pool must open that many, and all returned: a pool
    keeps up to its size of idle connections, so those are the ones requests will use.
    """
    size = getattr(engine.pool, "size", lambda: 0)()
    held = []
    try:
        for _ in range(max(min(count, size), 0)):
            held.append(engine.raw_connection())
    finally:
        for conn in held:
            conn.close()
    return len(held)


def statements_sent(engine: Engine) -> tuple[int, int]:
    """(statements, commits) ``engine`` has sent so far: the round trips the server makes.

    A statement is one cursor execution (an ``executemany`` counts once, as do SQLAlchemy's
    multi-row INSERTs); a commit is an explicit COMMIT (autocommit statements have none). Per
    job of a benchmark run this is the steadiest measure of how chatty a code path is; exposed
    in ``/metrics`` as ``pandawms_db_statements_total`` and ``pandawms_db_commits_total``.
    """
    counts = _COUNTS.get(engine)
    return (counts.statements.value, counts.commits.value) if counts is not None else (0, 0)


#: A pooled connection unused for longer than this is checked with a ping before it is handed out.
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection at checkout only when it sat idle in the pool for a while.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round trip on every
    request, a tenth of a heartbeat's time under load (py-spy, benchmarks/README.md). A
    connection in steady use is known to be alive; one idle for a while may have been cut by a
    database restart or a firewall, so that one is pinged, and replaced if the ping fails. A
    connection that dies between two busy requests fails that request with a 503 (the pool is
    then invalidated and refilled).
    """

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means "get another connection"
            raise sa_exc.DisconnectionError(str(exc)) from exc
        if not alive:
            raise sa_exc.DisconnectionError("ping failed")


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: commits on success, rolls back on any exception."""
    with engine.begin() as conn:
        yield conn


@contextlib.contextmanager
def autocommit_conn(engine: Engine) -> Iterator[Connection]:
    """A connection whose every statement commits on its own (PostgreSQL, MariaDB).

    For a write that is one statement (a heartbeat's ``UPDATE ... RETURNING``): it saves the
    BEGIN and COMMIT round trips. SQLite keeps its write transaction (``BEGIN IMMEDIATE``).
    """
    if backend_name(engine) == "sqlite":
        with write_tx(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction; on SQLite it does not take the write lock."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="DEFERRED")
        with conn.begin():
            yield conn


def supports_skip_locked(engine: Engine) -> bool:
    """True where ``SELECT ... FOR UPDATE SKIP LOCKED`` exists (PostgreSQL, MariaDB >= 10.6, Oracle)."""
    name = backend_name(engine)
    if name in ("postgresql", "oracle"):
        return True
    if name == "mysql":
        info = engine.dialect.server_version_info or ()
        if engine.dialect.is_mariadb:  # type: ignore[attr-defined]
            return tuple(info[:2]) >= (10, 6)
        return tuple(info[:1]) >= (8,)
    return False


#: Exceptions meaning "the database cannot serve this now" (pool exhausted, statement cancelled,
#: lock wait timeout, lost connection): worth retrying later, so the client is told to come back.
#: Not every database error: a value the database refuses (DataError) or a broken constraint
#: (IntegrityError) would fail again on every retry (see REFUSED_ERRORS).
BUSY_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
)


class DbTrouble(StrEnum):
    """What kind of database error an exception is; the API decides what each is answered with."""

    #: the database cannot serve now (see BUSY_ERRORS): retry later
    BUSY = "busy"
    #: two transactions held what the other wanted; run alone, each succeeds
    DEADLOCK = "deadlock"
    #: a value of the request the database refuses (too long, out of range)
    INVALID = "refused-invalid"
    #: a row the request would write breaks a constraint (a duplicate key)
    CONFLICT = "refused-conflict"


#: Database refusals caused by the request's content, with their kind.
REFUSED_ERRORS: tuple[tuple[type[sa_exc.DBAPIError], DbTrouble], ...] = (
    (sa_exc.DataError, DbTrouble.INVALID),
    (sa_exc.IntegrityError, DbTrouble.CONFLICT),
)


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL's deadlock_detected (40P01) or MariaDB's ER_LOCK_DEADLOCK (1213).

    A busy error by type (:data:`BUSY_ERRORS`), but caused by what two transactions hold,
    not by the database: run alone, each of them succeeds.
    """
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "40P01":
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] == 1213


def refusal(exc: BaseException) -> DbTrouble | None:
    """The kind of a database refusal caused by the request, or None for other errors."""
    return next((kind for cls, kind in REFUSED_ERRORS if isinstance(exc, cls)), None)


def classify(exc: BaseException) -> DbTrouble | None:
    """The kind of database error ``exc`` is, or None when it is not one."""
    if is_deadlock(exc):
        return DbTrouble.DEADLOCK
    if isinstance(exc, BUSY_ERRORS):
        return DbTrouble.BUSY
    return refusal(exc)
