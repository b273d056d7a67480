"""States of an event range, and the event-service flags of a job (PanDA's EventServiceUtils).

A range waits in its pool (``ready``), is handed to one consumer (``sent``), may be reported
``running``, and ends ``finished`` or ``fatal``; a ``failed`` range goes back to the pool until it
has failed ``maxAttempt`` times, then it is ``fatal``. ``cancelled`` ranges belong to a killed
job or task.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any


class RangeStatus(StrEnum):
    """Status of one event range."""

    READY = "ready"
    SENT = "sent"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FATAL = "fatal"


#: Statuses a consumer may take a range in: waiting, or failed with attempts left.
CLAIMABLE = (RangeStatus.READY.value, RangeStatus.FAILED.value)
#: Statuses of a range some consumer holds.
HELD = (RangeStatus.SENT.value, RangeStatus.RUNNING.value)
#: Statuses no range leaves.
FINAL = (RangeStatus.FINISHED.value, RangeStatus.CANCELLED.value, RangeStatus.FATAL.value)


class EventServiceFlag(IntEnum):
    """The job's ``eventService`` column, as the pilot and Harvester read it."""

    NONE = 0
    #: A consumer: takes ranges from its job set's pool.
    CONSUMER = 1
    #: Merges the outputs of the finished ranges of a job set.
    MERGE = 2
    #: A jumbo job: takes ranges from every pool of its task.
    JUMBO = 4
    #: A consumer of a task with jumbo jobs (co-jumbo): takes ranges from its job set's pool,
    #: which the task's jumbo jobs drain as well.
    CO_JUMBO = 5


#: Flags of jobs that take event ranges (and that getJob marks ``eventService=True``).
TAKES_RANGES = (EventServiceFlag.CONSUMER, EventServiceFlag.JUMBO, EventServiceFlag.CO_JUMBO)
#: Flags of the consumers of one job set.
CONSUMERS = (EventServiceFlag.CONSUMER, EventServiceFlag.CO_JUMBO)


#: Attempts a range gets before it is fatal, unless the task says otherwise.
DEFAULT_MAX_ATTEMPT = 3


#: The task's ``useJumbo``: jumbo jobs wanted (task/enable_jumbo_jobs), or switched off again.
#: With "D" the waiting co-jumbo jobs are released, as JEDI does.
USE_JUMBO_ON = "W"
USE_JUMBO_OFF = "D"


def jumbo_enabled(task: Mapping[str, Any]) -> bool:
    """Whether the task (a row of ``tasks``) keeps jumbo jobs and makes co-jumbo consumers."""
    return task.get("useJumbo") == USE_JUMBO_ON and bool(task.get("numJumboJobs"))
