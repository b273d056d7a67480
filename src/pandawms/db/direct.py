"""A statement compiled once and run straight on the driver's cursor.

For the statements the server runs thousands of times a second (a pilot's heartbeat, a
dispatch's move), a good part of the client's cost was SQLAlchemy's per-execution work around
them: looking the compiled form up, building the parameters, the execution context and the
result object. ``python -m benchmarks.direct_statement`` (one prebuilt heartbeat UPDATE ...
RETURNING, same transaction, round trip included) measured 228-314 us a statement through
``Connection.execute`` and 179-267 us here, some 50 us of client CPU less in every run
(benchmarks/README.md). Here the statement is compiled once per dialect; each run hands the SQL
text and the parameters to the DBAPI cursor of the connection's current transaction.

What SQLAlchemy would do around a statement still happens: the engine's ``before_cursor_execute``
and ``after_cursor_execute`` listeners run (the statement counter, the hang guard of
:mod:`pandawms.db.hangguard`), and a driver error is raised as SQLAlchemy's wrapped exception
(``OperationalError``, ``IntegrityError``, ...), the connection invalidated when the error says
it is gone, so callers handle it as any other database error. Only statements whose parameters
need no SQLAlchemy conversion and no list expansion qualify (:func:`compile_direct` says None
otherwise, and the caller keeps ``Connection.execute``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement


@contextlib.contextmanager
def driver_cursor(conn: Connection, sql: str, params: Any, many: bool = False) -> Iterator[Any]:
    """A cursor of ``conn``'s driver connection for one statement, with what SQLAlchemy does
    around a statement: the engine's ``before/after_cursor_execute`` listeners (statement
    counter, hang guard) and a driver error raised as SQLAlchemy's wrapped class, the connection
    invalidated when the error says it is gone. ``sql`` and ``params`` are what the listeners
    and the error message see; the caller runs the statement on the cursor."""
    fairy: Any = conn.connection
    dbapi_conn = fairy.driver_connection
    dispatch: Any = conn.dispatch
    cursor = dbapi_conn.cursor()
    try:
        dispatch.before_cursor_execute(conn, cursor, sql, params, None, many)
        try:
            yield cursor
        finally:
            dispatch.after_cursor_execute(conn, cursor, sql, params, None, many)
    except conn.dialect.loaded_dbapi.Error as exc:
        gone = bool(conn.dialect.is_disconnect(exc, dbapi_conn, cursor))
        if gone:
            conn.invalidate(exc)
        raise sa_exc.DBAPIError.instance(
            sql,
            params,
            exc,
            conn.dialect.loaded_dbapi.Error,
            connection_invalidated=gone,
            dialect=conn.dialect,
            ismulti=many,
        ) from exc
    finally:
        cursor.close()


class DirectStatement:
    """SQL text and its fixed parameters, for one dialect; see the module's docstring."""

    __slots__ = ("sql", "fixed", "names")

    def __init__(self, sql: str, fixed: dict[str, Any]) -> None:
        self.sql = sql
        self.fixed = fixed
        #: The result's column names, learnt from the first execution.
        self.names: tuple[str, ...] | None = None

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run with ``params`` in ``conn``'s transaction; the first row by column name, or None."""
        values = {**self.fixed, **params}
        with driver_cursor(conn, self.sql, values) as cursor:
            cursor.execute(self.sql, values)
            row = cursor.fetchone()
            if row is not None and self.names is None:
                self.names = tuple(column.name for column in cursor.description)
        return dict(zip(self.names or (), row, strict=True)) if row is not None else None

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run once per parameter set of ``rows`` in ``conn``'s transaction, as one
        ``executemany`` (psycopg sends the sets in one pipeline); the rows affected, summed."""
        if not rows:
            return 0
        values = [{**self.fixed, **row} for row in rows]
        with driver_cursor(conn, self.sql, values, many=True) as cursor:
            cursor.executemany(self.sql, values)
            return int(cursor.rowcount)


def compile_direct(stmt: ClauseElement, dialect: Dialect) -> DirectStatement | None:
    """``stmt`` compiled for ``dialect``, or None when it cannot run straight on the cursor:
    a parameter SQLAlchemy converts before the driver sees it, a list expanded at execution,
    or a parameter style other than psycopg's."""
    compiled: Any = stmt.compile(dialect=dialect)
    sql = str(compiled)
    if getattr(compiled, "_bind_processors", None) or compiled.positiontup or "POSTCOMPILE" in sql:
        return None
    if dialect.paramstyle != "pyformat":
        return None
    fixed = {name: value for name, value in compiled.params.items() if value is not None}
    return DirectStatement(sql, fixed)


def direct_once(
    cache: MutableMapping[Any, Any],
    key: Hashable,
    conn: Connection,
    make: Callable[[], ClauseElement],
    cap: int,
) -> DirectStatement | None:
    """The statement ``make`` builds, compiled for the driver's cursor once per ``key`` and kept
    in ``cache`` (at most ``cap`` entries; past that compiled each time); None on backends other
    than PostgreSQL, or when it cannot run there (:func:`compile_direct`)."""
    if conn.dialect.name != "postgresql":
        return None
    if key in cache:
        return cache[key]
    made = compile_direct(make(), conn.dialect)
    if len(cache) < cap:
        cache[key] = made
    return made
