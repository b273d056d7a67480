"""Test databases: SQLite always; PostgreSQL and MariaDB when their servers answer.

Each test session creates its own database on the shared servers (named after the process) and
drops it at the end, so parallel runs and leftovers never collide. Set
``PANDA_TEST_REQUIRE_DBS=1`` (``.ci/run`` does) to turn a missing server into a failure instead
of a skip.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("PANDA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("PANDA_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
REQUIRE = os.environ.get("PANDA_TEST_REQUIRE_DBS") == "1"


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Backend:
    """A database server the tests can use, and the session database made on it."""

    name: str
    admin_url: str
    url: str = ""
    reason: str = ""

    def setup(self) -> None:
        if self.name == "sqlite" or self.url or self.reason:
            return
        if not _reachable(self.admin_url):
            self.reason = f"{self.name} server not reachable at {make_url(self.admin_url).render_as_string()}"
            return
        db = f"pandawms_test_{os.getpid()}"
        try:
            engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {db}"))
                conn.execute(text(f"CREATE DATABASE {db}"))
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - any failure means the backend is unusable
            self.reason = f"{self.name} server refused to create a test database: {exc}"
            return
        self.url = make_url(self.admin_url).set(database=db).render_as_string(hide_password=False)

    def teardown(self) -> None:
        if self.name == "sqlite" or not self.url:
            return
        db = make_url(self.url).database
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if self.name == "postgresql":
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": db},
                )
            conn.execute(text(f"DROP DATABASE IF EXISTS {db}"))
        engine.dispose()

    def require(self) -> str:
        """The URL of the session database, or skip (fail in CI) with the reason."""
        self.setup()
        if self.reason:
            if REQUIRE:
                pytest.fail(self.reason)
            pytest.skip(self.reason)
        return self.url


BACKENDS = {
    "sqlite": Backend("sqlite", ""),
    "postgresql": Backend("postgresql", PG_ADMIN_URL),
    "mariadb": Backend("mariadb", MYSQL_ADMIN_URL),
}
