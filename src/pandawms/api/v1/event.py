"""``/api/v1/event/*``: the event service is not enabled on this server.

Harvester and panda-client call these for event-service jobs only. Each answers with a clear
refusal in the envelope (``success`` false, HTTP 200), so a client reports the reason instead of
an unknown-method error; the parameters are still checked as the real server declares them.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module

methods = V1Module("event")


NOT_ENABLED = "the event service is not enabled on this server"


_ANY = Param("any", None)


def _refuse(ctx: RequestContext, **_: Any) -> Result:
    return False, NOT_ENABLED, None


methods.post(
    "acquire_event_ranges",
    job_id=Param("int"),
    jobset_id=_ANY,
    task_id=_ANY,
    n_ranges=_ANY,
    timeout=_ANY,
    scattered=_ANY,
    segment_id=_ANY,
)(_refuse)


methods.post(
    "update_event_ranges",
    event_ranges=Param("any"),
    timeout=_ANY,
    version=_ANY,
)(_refuse)


methods.post(
    "update_single_event_range",
    event_range_id=Param("str"),
    event_range_status=Param("str"),
    core_count=_ANY,
    cpu_consumption_time=_ANY,
    object_store_id=_ANY,
    timeout=_ANY,
)(_refuse)


methods.get(
    "get_available_event_range_count",
    job_id=Param("int"),
    jobset_id=_ANY,
    task_id=_ANY,
    timeout=_ANY,
)(_refuse)


methods.get("get_event_range_statuses", job_task_ids=Param("any"))(_refuse)
