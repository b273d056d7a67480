"""Error codes of the PanDA protocol and the one exception the API turns into a reply.

Codes keep the real server's numbers: pilots and Harvester branch on them.
"""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    """Dispatcher ``StatusCode`` in legacy pilot replies (and inside v1 pilot data)."""

    SUCCESS = 0
    TIMEOUT = 10
    NO_JOBS = 20
    FAILED = 30
    INVALID = 50
    ROLE = 60
    PERMS = 70
    MISSING_KEY = 80
    PROXY_ERROR = 90


class DispatcherError(IntEnum):
    """``jobDispatcherErrorCode``: set when the server fails a job its pilot lost."""

    LOST_HEARTBEAT = 100
    RECOVERY = 101
    SEND_ERROR = 102
    HOLDING = 103
    TRANSFERRING = 104
    TIMEOUT = 105


class TaskBufferError(IntEnum):
    """``taskBufferErrorCode``: why the server ended a job (kill, expiry, retry...)."""

    KILL = 100
    TRANSFER = 101
    EXPIRE = 102
    ABORTED = 103
    REASSIGNED = 105
    RETRIED = 106
    PILOT_RETRIED = 107
    FAST_REBROKERAGE = 130
    WORKER_DONE = 300


class DdmError(IntEnum):
    """``ddmErrorCode``: problems with the output file report."""

    SETUPPER = 100
    ADDER = 200


#: Pilot error code the pilot reports after obeying ``tobekilled``.
PILOT_PANDAKILL = 1144


class PandaError(Exception):
    """A refusal with a PanDA status code and a message for the caller; no HTTP here.

    Raised anywhere below the API; what kind of refusal it is (its class) decides the reply,
    through the one table in :mod:`pandawms.api.errors`, so the layers below the API never
    speak HTTP. A bare ``PandaError`` is answered like :class:`Invalid`. Raising it inside a
    transaction rolls the transaction back, so a refused request changes nothing.

    ``code`` is the PanDA ``StatusCode`` the reply carries; each kind has its own default
    (:attr:`default_code`), and a raise site may give another.
    """

    default_code: int = StatusCode.INVALID

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(self.default_code if code is None else code)


class Invalid(PandaError):
    """A bad argument or value in a well-formed request."""


class NotFound(PandaError):
    """The named job, task, file or method does not exist."""


class Conflict(PandaError):
    """The request does not fit the current state: an illegal status move, a concurrent change,
    a file that exists already."""


class Forbidden(PandaError):
    """The caller is known but may not do this."""

    default_code = StatusCode.PERMS


class Unauthenticated(PandaError):
    """The caller could not be identified (no credential, or one that does not verify)."""

    default_code = StatusCode.PERMS


class WrongVerb(PandaError):
    """The method is not called with the HTTP verb it takes."""


class TooLarge(PandaError):
    """The request, or a part of it, exceeds a size limit."""


class Unsupported(PandaError):
    """The request body comes in a form this call does not take."""


class Busy(PandaError):
    """The server cannot serve this now (a full cache, no free submission lane): retry later."""

    default_code = StatusCode.TIMEOUT


class Declined(PandaError):
    """The server cannot give what was asked and says so in a normal reply (a credential it does
    not hold): the clients read the status code, not a transport error."""
