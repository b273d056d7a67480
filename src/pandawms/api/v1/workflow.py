"""``/api/v1/workflow/*``: pchain's and pbook's native workflows, refused: pandawms runs none.

They answer in the envelope with the reason (``success: false``), never a 404, so the client
prints it instead of a connection error.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.authz import USER
from pandawms.api.context import RequestContext
from pandawms.api.v1.common import no_idds_message
from pandawms.api.v1.registry import Result, V1Module

methods = V1Module("workflow")


@methods.post("submit_workflow_raw_request", USER)
def submit_workflow_raw_request(ctx: RequestContext, *, params: Any) -> Result:
    """Refused: workflows (pchain) need iDDS or native workflows, which pandawms lacks."""
    return False, no_idds_message(ctx), None


@methods.post("submit_workflow", USER)
def submit_workflow(ctx: RequestContext, *, workflow_definition: Any) -> Result:
    """Refused: workflows are not run by pandawms."""
    return False, no_idds_message(ctx), None


@methods.get("get_workflow_details", USER)
def get_workflow_details(ctx: RequestContext, *, workflow_id: int) -> Result:
    """Refused: pandawms keeps no native workflows (pbook show_native_workflow)."""
    return False, f"workflow_id={workflow_id} not found: pandawms runs no native workflows", None
