"""Many rows into one table in one statement: PostgreSQL's COPY, an executemany elsewhere.

A submission writes hundreds of job, file, parameter and status-log rows. Through SQLAlchemy's
executemany each row's parameters are built and converted in Python, column by column: about
half of the server's CPU for a 500-job submission (py-spy, benchmarks/README.md). PostgreSQL's
``COPY ... FROM STDIN`` takes the rows as one stream that psycopg encodes in C. It runs on the
caller's connection, inside its transaction, through :func:`pandawms.db.direct.driver_cursor`:
counted and guarded like any statement, and an error is raised as the same SQLAlchemy exception
class an INSERT would raise (a refused value is a ``DataError``, a dropped connection is
invalidated), so callers and the API see no difference. SQLite and MariaDB keep the executemany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

from pandawms.db.direct import driver_cursor


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> None:
    """Insert ``rows`` (each with every column of ``names``) into ``table``, in the order given.

    Columns not in ``names`` get their defaults (an autoincrement key its next value), as with
    an INSERT that leaves them out.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), [{name: row[name] for name in names} for row in rows])
        return
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    fairy: Any = conn.connection
    text = statement.as_string(fairy.driver_connection)
    with driver_cursor(conn, text, None) as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[name] for name in names])
