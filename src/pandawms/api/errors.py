"""How every error is answered: one table from an error's kind to its HTTP status and PanDA code.

The layers below the API raise errors by kind (:mod:`pandawms.model.errors`) and know nothing of
HTTP; database errors are classified by :func:`pandawms.db.engine.classify`. This module is the
one place that turns either into a reply's status, ``StatusCode`` and message. The v1 envelope,
the legacy dispatcher replies and the monitor's pages only render what :func:`answer` says.

A kind is looked up along the exception's MRO, so a subclass is answered like the nearest kind
in the table unless it has a row of its own. An exception of no known kind is a server bug: 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import TimeoutError as PoolTimeout

from pandawms.config import Settings
from pandawms.db.engine import DbTrouble, classify
from pandawms.model.errors import (
    Busy,
    Conflict,
    Declined,
    Forbidden,
    Invalid,
    NotFound,
    PandaError,
    StatusCode,
    TooLarge,
    Unauthenticated,
    Unsupported,
    WrongVerb,
)


@dataclass(frozen=True)
class Row:
    """How one kind of error is answered."""

    #: HTTP status of the reply
    status: int
    #: PanDA ``StatusCode``; a :class:`PandaError` carries its own (by default this one)
    code: int
    #: v1: once the handler has run, answered HTTP 200 with ``success: false`` (panda-client
    #: treats any other status as a lost connection and would hide the reason)
    envelope: bool = False
    #: the client is told when to come back (``Retry-After``)
    retry: bool = False


_INVALID = int(StatusCode.INVALID)

#: Refusals raised by the code, by kind. A bare PandaError is answered like Invalid.
KINDS: dict[type[PandaError], Row] = {
    PandaError: Row(400, _INVALID, envelope=True),
    Invalid: Row(400, _INVALID, envelope=True),
    NotFound: Row(404, _INVALID, envelope=True),
    Conflict: Row(409, _INVALID, envelope=True),
    Unauthenticated: Row(401, int(StatusCode.PERMS)),
    Forbidden: Row(403, int(StatusCode.PERMS)),
    WrongVerb: Row(405, _INVALID),
    TooLarge: Row(413, _INVALID),
    Unsupported: Row(415, _INVALID),
    Busy: Row(503, int(StatusCode.TIMEOUT), retry=True),
    Declined: Row(200, _INVALID),
}

#: Database errors, by what :func:`pandawms.db.engine.classify` makes of them. A refusal by the
#: database keeps its 4xx status in v1 too: it says the server let a bad value through.
DATABASE: dict[DbTrouble, Row] = {
    DbTrouble.BUSY: Row(503, int(StatusCode.TIMEOUT), retry=True),
    DbTrouble.DEADLOCK: Row(503, int(StatusCode.TIMEOUT), retry=True),
    DbTrouble.INVALID: Row(400, _INVALID),
    DbTrouble.CONFLICT: Row(409, _INVALID),
}

#: Anything else: a bug in the server.
INTERNAL = Row(500, int(StatusCode.FAILED))


class Outcome(StrEnum):
    """What happened, for the log line and the audit record."""

    REFUSED = "refused"  # a PandaError: the request was refused on purpose
    BUSY = "busy"  # the database cannot serve now
    DB_REFUSED = "db-refused"  # the database refused a value of the request
    FAILED = "failed"  # a bug


@dataclass(frozen=True)
class Answer:
    """An exception turned into what the client is told."""

    status: int
    code: int
    message: str
    envelope: bool
    retry: bool
    outcome: Outcome


def row_of(exc: BaseException) -> Row:
    """The table row for ``exc``: its nearest kind along the MRO, its database kind, or 500."""
    for cls in type(exc).__mro__:
        row = KINDS.get(cls)
        if row is not None:
            return row
    trouble = classify(exc)
    return DATABASE[trouble] if trouble is not None else INTERNAL


def status_of(exc: BaseException) -> int:
    """The HTTP status ``exc`` is answered with."""
    return row_of(exc).status


def busy_message(exc: BaseException, settings: Settings) -> str:
    """What a client hears when the database cannot serve it now."""
    if isinstance(exc, PoolTimeout):
        return (
            f"server busy: no database connection free within {settings.db_pool_timeout} s; "
            f"retry after {settings.busy_retry_after} s"
        )
    return f"database timeout or error in the PanDA server; retry after {settings.busy_retry_after} s"


def refusal_message(exc: BaseException) -> str:
    """A database refusal in one line, without the SQL statement or parameters SQLAlchemy adds."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"the database refused a value of this request: {first[:200]}"


def answer(exc: BaseException, settings: Settings, request_id: str) -> Answer:
    """Status, code and message for ``exc`` (the message never carries SQL or a traceback)."""
    row = row_of(exc)
    if isinstance(exc, PandaError):
        return Answer(row.status, exc.code, exc.message, row.envelope, row.retry, Outcome.REFUSED)
    trouble = classify(exc)
    if trouble in (DbTrouble.BUSY, DbTrouble.DEADLOCK):
        message, outcome = busy_message(exc, settings), Outcome.BUSY
    elif trouble is not None:
        message, outcome = refusal_message(exc), Outcome.DB_REFUSED
    else:
        message, outcome = f"internal server error (request {request_id})", Outcome.FAILED
    return Answer(row.status, row.code, message, row.envelope, row.retry, outcome)


__all__ = [
    "DATABASE",
    "INTERNAL",
    "KINDS",
    "Answer",
    "Outcome",
    "Row",
    "answer",
    "busy_message",
    "refusal_message",
    "row_of",
    "status_of",
]
