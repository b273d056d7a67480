"""The one table from an error's kind to its reply: every kind, the MRO lookup, database errors.

Database errors come from a real SQLite database where one can make them; SQLite never raises
a DataError, so that one is built as SQLAlchemy wraps a driver's error.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, text
from sqlalchemy import exc as sa_exc

from pandawms.api.crosssite import CrossSite, CrossSiteVerb
from pandawms.api.errors import DATABASE, INTERNAL, KINDS, Outcome, answer, row_of, status_of
from pandawms.api.oidc import TokenRejected
from pandawms.config import Settings
from pandawms.core.creds.proxies import CredentialMissing
from pandawms.core.jobs.transitions import ConcurrentChange
from pandawms.core.tasks.sandbox import CacheFull
from pandawms.db.engine import DbTrouble, classify
from pandawms.model import errors as kinds
from pandawms.model.errors import StatusCode
from pandawms.model.states import IllegalMove
from pandawms.model.task_states import IllegalTaskMove
from pandawms.model.values import BadValue
from pandawms.monitor.params import BadParam

SETTINGS = Settings()
INVALID, PERMS, TIMEOUT = int(StatusCode.INVALID), int(StatusCode.PERMS), int(StatusCode.TIMEOUT)

#: kind -> (HTTP status, StatusCode, answered in the v1 envelope, Retry-After)
EXPECTED = {
    kinds.PandaError: (400, INVALID, True, False),
    kinds.Invalid: (400, INVALID, True, False),
    kinds.NotFound: (404, INVALID, True, False),
    kinds.Conflict: (409, INVALID, True, False),
    kinds.Unauthenticated: (401, PERMS, False, False),
    kinds.Forbidden: (403, PERMS, False, False),
    kinds.WrongVerb: (405, INVALID, False, False),
    kinds.TooLarge: (413, INVALID, False, False),
    kinds.Unsupported: (415, INVALID, False, False),
    kinds.Busy: (503, TIMEOUT, False, True),
    kinds.Declined: (200, INVALID, False, False),
}


def test_the_table_has_every_kind_and_nothing_else() -> None:
    assert set(KINDS) == set(EXPECTED)


@pytest.mark.parametrize("kind", list(EXPECTED), ids=lambda k: k.__name__)
def test_every_kind_maps_to_its_status_and_code(kind: type[kinds.PandaError]) -> None:
    exc = kind("why")
    got = answer(exc, SETTINGS, "r1")
    assert (got.status, got.code, got.envelope, got.retry) == EXPECTED[kind]
    assert got.message == "why" and got.outcome is Outcome.REFUSED
    # the code a kind carries by default is the one its row names
    assert exc.code == KINDS[kind].code


def test_a_raise_site_may_give_its_own_code() -> None:
    got = answer(kinds.Forbidden("production role needed", code=StatusCode.ROLE), SETTINGS, "r1")
    assert (got.status, got.code) == (403, int(StatusCode.ROLE))


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (IllegalMove(7, "finished", "running"), 409, INVALID),
        (IllegalTaskMove(8, "done", "running"), 409, INVALID),
        (ConcurrentChange([1, 2]), 409, INVALID),
        (BadValue("attemptNr: not a number"), 400, INVALID),
        (BadParam("limit must be a whole number"), 400, INVALID),
        (CacheFull(), 503, TIMEOUT),
        (CredentialMissing("proxy is missing"), 200, int(StatusCode.MISSING_KEY)),
        (TokenRejected("expired"), 401, INVALID),
        (CrossSite("cross-site request refused"), 403, PERMS),
        (CrossSiteVerb("needs POST"), 405, PERMS),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_subclasses_are_answered_by_their_nearest_kind(exc: BaseException, status: int, code: int) -> None:
    got = answer(exc, SETTINGS, "r1")
    assert (got.status, got.code) == (status, code)


def test_lookup_follows_the_mro_not_the_first_base() -> None:
    class Both(kinds.TooLarge, kinds.Invalid):
        pass

    class Deep(Both):
        pass

    assert row_of(Deep("x")) == KINDS[kinds.TooLarge]
    # ValueError comes after the kind in the MRO of the model's value errors
    assert row_of(BadValue("x")) == KINDS[kinds.Invalid]


def test_an_illegal_move_is_a_conflict_on_the_legacy_path_not_a_500() -> None:
    got = answer(IllegalMove(1, "finished", "running"), SETTINGS, "r1")
    assert got.status == 409 and got.code == INVALID
    assert got.message == "job 1 cannot move from finished to running"
    # still a ValueError for the callers that probe a move that way
    assert isinstance(IllegalMove(1, "a", "b"), ValueError)


def _integrity_error() -> sa_exc.IntegrityError:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1))
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(id=1))
    except sa_exc.IntegrityError as exc:
        return exc
    raise AssertionError("a duplicate key was accepted")


def _operational_error() -> sa_exc.OperationalError:
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
    except sa_exc.OperationalError as exc:
        return exc
    raise AssertionError("a missing table was read")


def test_database_errors_are_classified_and_answered() -> None:
    conflict = _integrity_error()
    assert classify(conflict) is DbTrouble.CONFLICT
    got = answer(conflict, SETTINGS, "r1")
    assert (got.status, got.code, got.envelope, got.outcome) == (409, INVALID, False, Outcome.DB_REFUSED)
    assert got.message.startswith("the database refused a value of this request: ")
    assert "INSERT" not in got.message

    invalid = sa_exc.DataError("INSERT ...", {}, sqlite3.DataError("value too long"))
    assert classify(invalid) is DbTrouble.INVALID
    assert status_of(invalid) == 400

    busy = _operational_error()
    assert classify(busy) is DbTrouble.BUSY
    got = answer(busy, SETTINGS, "r1")
    assert (got.status, got.code, got.retry, got.outcome) == (503, TIMEOUT, True, Outcome.BUSY)
    assert f"retry after {SETTINGS.busy_retry_after} s" in got.message

    pool = sa_exc.TimeoutError("QueuePool limit reached")
    assert answer(pool, SETTINGS, "r1").message.startswith("server busy: no database connection free")
    assert DATABASE[DbTrouble.DEADLOCK] == DATABASE[DbTrouble.BUSY]


def test_anything_else_is_a_500_that_names_the_request_only() -> None:
    got = answer(KeyError("secret detail"), SETTINGS, "abc123")
    assert (got.status, got.code, got.outcome) == (INTERNAL.status, int(StatusCode.FAILED), Outcome.FAILED)
    assert got.status == 500 and got.message == "internal server error (request abc123)"
