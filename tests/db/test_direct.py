"""Statements run on the driver's cursor (:mod:`pandawms.db.direct`) behave as through SQLAlchemy.

Same rows, the engine's statement counter and hang guard still see them, a value the database
refuses raises SQLAlchemy's wrapped error class, and a connection the server dropped is
invalidated (the next checkout gets a new one) with the wrapped ``OperationalError``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy import exc as sa_exc

from pandawms.core.runtime import Runtime
from pandawms.db.direct import compile_direct
from pandawms.db.engine import statements_sent
from pandawms.db.hangguard import install_hang_guard
from pandawms.db.schema import jobs


def _update() -> Any:
    return (
        jobs.update()
        .where(jobs.c.PandaID == bindparam("hb_id"), jobs.c.jobStatus == "running")
        .values(jobName=bindparam("hb_name"))
        .returning(jobs.c.jobName, jobs.c.commandToPilot)
    )


@pytest.fixture
def pg_rt(make_runtime) -> Runtime:  # noqa: ANN001
    from tests.dbs import BACKENDS

    rt = make_runtime(BACKENDS["postgresql"].require())
    with rt.engine.begin() as conn:
        conn.execute(
            jobs.insert(),
            [{"PandaID": 1, "jobStatus": "running"}, {"PandaID": 2, "jobStatus": "activated"}],
        )
    return rt


def test_rows_and_counters_as_through_sqlalchemy(pg_rt: Runtime) -> None:
    direct = compile_direct(_update(), pg_rt.engine.dialect)
    assert direct is not None
    before = statements_sent(pg_rt.engine)[0]
    with pg_rt.engine.begin() as conn:
        assert direct.first(conn, {"hb_id": 1, "hb_name": "renamed"}) == {
            "jobName": "renamed",
            "commandToPilot": None,
        }
        assert direct.first(conn, {"hb_id": 2, "hb_name": "not running"}) is None
    assert statements_sent(pg_rt.engine)[0] - before == 2
    with pg_rt.engine.connect() as conn:
        names = dict(conn.execute(select(jobs.c.PandaID, jobs.c.jobName)).all())
    assert names == {1: "renamed", 2: None}


def test_a_refused_value_raises_the_wrapped_error_and_rolls_back(pg_rt: Runtime) -> None:
    direct = compile_direct(_update(), pg_rt.engine.dialect)
    assert direct is not None
    with pytest.raises(sa_exc.DataError), pg_rt.engine.begin() as conn:
        direct.first(conn, {"hb_id": 1, "hb_name": "first"})
        direct.first(conn, {"hb_id": 1, "hb_name": "x" * 10_000})  # longer than the column
    with pg_rt.engine.connect() as conn:
        assert conn.execute(select(jobs.c.jobName).where(jobs.c.PandaID == 1)).scalar() is None


def test_a_dropped_connection_is_invalidated(pg_rt: Runtime) -> None:
    direct = compile_direct(_update(), pg_rt.engine.dialect)
    assert direct is not None
    with pg_rt.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.rollback()
        with pg_rt.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(sa_exc.OperationalError) as caught:
            direct.first(conn, {"hb_id": 1, "hb_name": "gone"})
        assert caught.value.connection_invalidated
    with pg_rt.engine.begin() as conn:  # the pool hands out a working connection again
        assert direct.first(conn, {"hb_id": 1, "hb_name": "back"}) == {
            "jobName": "back",
            "commandToPilot": None,
        }


def test_the_hang_guard_sees_direct_statements(pg_rt: Runtime) -> None:
    guard = install_hang_guard(pg_rt.engine, 0.5)
    assert guard is not None
    stall = (
        jobs.update()
        .where(jobs.c.PandaID == bindparam("hb_id"))
        .values(jobName=select(text("pg_sleep(5)::text")).scalar_subquery())
        .returning(jobs.c.jobName)
    )
    direct = compile_direct(stall, pg_rt.engine.dialect)
    assert direct is not None
    with pytest.raises(sa_exc.OperationalError), pg_rt.engine.begin() as conn:
        direct.first(conn, {"hb_id": 1})
    assert guard.cut == 1


def test_what_needs_sqlalchemy_is_not_compiled_for_the_cursor(pg_rt: Runtime) -> None:
    listed = select(jobs.c.PandaID).where(jobs.c.jobStatus.in_(["running", "starting"]))
    assert compile_direct(listed, pg_rt.engine.dialect) is None


def test_sqlite_keeps_sqlalchemy(sqlite_rt: Runtime) -> None:
    assert compile_direct(_update(), sqlite_rt.engine.dialect) is None  # type: ignore[arg-type]
