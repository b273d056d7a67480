"""Statuses of a data carousel request (a dataset staged from tape to disk), as the real server names them.

``queued`` waits for its turn; ``staging`` has a rule to a disk RSE; ``done`` once every file is
on disk; ``cancelled`` ends a request no task needs any more (or replaced by another); ``retired``
ends a done one whose rule may go.
"""

from __future__ import annotations

from enum import StrEnum


class CarouselStatus(StrEnum):
    """Statuses of ``data_carousel_requests.status``."""

    QUEUED = "queued"
    STAGING = "staging"
    DONE = "done"
    CANCELLED = "cancelled"
    RETIRED = "retired"


C = CarouselStatus
#: Requests still working toward disk.
ACTIVE: frozenset[CarouselStatus] = frozenset({C.QUEUED, C.STAGING})
#: Requests a new task over the same dataset joins instead of making another.
REUSABLE: frozenset[CarouselStatus] = frozenset({C.QUEUED, C.STAGING, C.DONE})
#: Requests that may be replaced by a new one (change_staging_destination).
RESUBMITTABLE: frozenset[CarouselStatus] = frozenset({C.STAGING, C.CANCELLED, C.DONE, C.RETIRED})
