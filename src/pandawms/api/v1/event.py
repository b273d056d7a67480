"""``/api/v1/event/*``: the event service is not enabled on this server.

Harvester and panda-client call these for event-service jobs only. Each answers with a clear
refusal in the envelope (``success`` false, HTTP 200), so a client reports the reason instead of
an unknown-method error; the parameters are still checked as the real server declares them.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.authz import HARVESTER, USER
from pandawms.api.context import RequestContext
from pandawms.api.v1.registry import Result, V1Module

methods = V1Module("event")


NOT_ENABLED = "the event service is not enabled on this server"


@methods.post("acquire_event_ranges", HARVESTER)
def acquire_event_ranges(
    ctx: RequestContext,
    *,
    job_id: int,
    jobset_id: Any = None,
    task_id: Any = None,
    n_ranges: Any = None,
    timeout: Any = None,
    scattered: Any = None,
    segment_id: Any = None,
) -> Result:
    """Refused: no event service here."""
    return False, NOT_ENABLED, None


@methods.post("update_event_ranges", HARVESTER)
def update_event_ranges(
    ctx: RequestContext, *, event_ranges: Any, timeout: Any = None, version: Any = None
) -> Result:
    """Refused: no event service here."""
    return False, NOT_ENABLED, None


@methods.post("update_single_event_range", HARVESTER)
def update_single_event_range(
    ctx: RequestContext,
    *,
    event_range_id: str,
    event_range_status: str,
    core_count: Any = None,
    cpu_consumption_time: Any = None,
    object_store_id: Any = None,
    timeout: Any = None,
) -> Result:
    """Refused: no event service here."""
    return False, NOT_ENABLED, None


@methods.get("get_available_event_range_count", HARVESTER)
def get_available_event_range_count(
    ctx: RequestContext, *, job_id: int, jobset_id: Any = None, task_id: Any = None, timeout: Any = None
) -> Result:
    """Refused: no event service here."""
    return False, NOT_ENABLED, None


@methods.get("get_event_range_statuses", USER)
def get_event_range_statuses(ctx: RequestContext, *, job_task_ids: Any) -> Result:
    """Refused: no event service here."""
    return False, NOT_ENABLED, None
