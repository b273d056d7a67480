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
    """A refusal with an HTTP status, a PanDA status code and a message for the caller.

    Raised anywhere below the API; the wire adapters render it in their own format. Raising it
    inside a transaction rolls the transaction back, so a refused request changes nothing.
    """

    def __init__(self, message: str, http_status: int = 400, code: int = StatusCode.INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = int(code)


class NotFound(PandaError):
    """The named job, file or method does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, http_status=404, code=StatusCode.INVALID)


class Forbidden(PandaError):
    """The caller may not do this."""

    def __init__(self, message: str, code: int = StatusCode.PERMS) -> None:
        super().__init__(message, http_status=403, code=code)
