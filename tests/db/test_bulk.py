"""Bulk inserts (PostgreSQL COPY, executemany elsewhere) store what an INSERT stores, or nothing.

:func:`pandawms.db.bulk.insert_rows` writes a submission's rows. On PostgreSQL it streams them
with COPY, past SQLAlchemy's parameter handling, so these tests check, on every backend, that
awkward values (NULLs, tabs, newlines, backslashes, non-ASCII, timestamps with microseconds,
floats, 64-bit integers) come back unchanged and that a row the database refuses raises the
same SQLAlchemy error class an INSERT raises and leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from pandawms.core.runtime import Runtime
from pandawms.db.bulk import insert_rows
from pandawms.db.engine import statements_sent
from pandawms.db.schema import job_status_log, jobs

AWKWARD = "tab\there\nnew line \\N back\\slash ünïcødé 'quote' \"dq\" ,comma"
WHEN = dt.datetime(2026, 12, 5, 8, 30, 1, 123456)


def _jobs() -> list[dict[str, object]]:
    return [
        {
            "PandaID": 9_000_000_000 + i,
            "jobName": AWKWARD if i == 0 else f"job-{i}",
            "jobStatus": "activated",
            "computingSite": None if i == 1 else "SITE",
            "creationTime": WHEN,
            "currentPriority": -5 + i,
            "meanCoreCount": 1.25,
            "jobsetID": None,
        }
        for i in range(3)
    ]


def test_rows_come_back_as_they_went_in(rt: Runtime) -> None:
    rows = _jobs()
    names = list(rows[0])
    with rt.engine.begin() as conn:
        before = statements_sent(rt.engine)[0]
        insert_rows(conn, jobs, rows, names)
        assert statements_sent(rt.engine)[0] - before == 1, "one statement for all the rows"
    with rt.engine.connect() as conn:
        found = [
            dict(r)
            for r in conn.execute(select(*[jobs.c[n] for n in names]).order_by(jobs.c.PandaID)).mappings()
        ]
    assert found == rows


def test_an_autoincrement_key_left_out_gets_its_values_in_order(rt: Runtime) -> None:
    rows = [
        {"PandaID": 7, "modificationTime": WHEN, "jobStatus": status, "reason": AWKWARD}
        for status in ("defined", "activated", "sent")
    ]
    with rt.engine.begin() as conn:
        insert_rows(conn, job_status_log, rows, list(rows[0]))
    with rt.engine.connect() as conn:
        found = conn.execute(
            select(job_status_log.c.jobStatus, job_status_log.c.reason).order_by(job_status_log.c.id)
        ).all()
    assert [tuple(r) for r in found] == [("defined", AWKWARD), ("activated", AWKWARD), ("sent", AWKWARD)]


def test_a_refused_row_raises_the_insert_error_and_writes_nothing(rt: Runtime) -> None:
    good = {"PandaID": 1, "modificationTime": WHEN, "jobStatus": "defined"}
    bad = {"PandaID": 2, "modificationTime": WHEN, "jobStatus": None}  # NOT NULL
    with pytest.raises(sa_exc.IntegrityError), rt.engine.begin() as conn:
        insert_rows(conn, job_status_log, [good, bad], list(good))
    with rt.engine.connect() as conn:
        assert conn.execute(select(job_status_log.c.id)).all() == []
    if rt.backend == "sqlite":
        return  # SQLite does not enforce VARCHAR lengths
    too_long = {"PandaID": 3, "modificationTime": WHEN, "jobStatus": "x" * 16}
    with pytest.raises(sa_exc.DataError), rt.engine.begin() as conn:
        insert_rows(conn, job_status_log, [good, too_long], list(good))
    with rt.engine.connect() as conn:
        assert conn.execute(select(job_status_log.c.id)).all() == []
