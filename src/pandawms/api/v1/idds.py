"""``/api/v1/idds/*``: pbook's workflow commands, refused: there is no iDDS behind this server.

They answer in the envelope with the reason (``success: false``), never a 404, so pbook prints
it instead of a connection error.
"""

from __future__ import annotations

from typing import Any

from pandawms.api.authz import USER
from pandawms.api.context import RequestContext
from pandawms.api.v1.common import no_idds_message
from pandawms.api.v1.registry import Result, V1Module, ok

methods = V1Module("idds")


@methods.post("relay_idds_command", USER)
def relay_idds_command(
    ctx: RequestContext,
    *,
    command_name: str,
    args: Any = None,
    kwargs: Any = None,
    manager: bool = False,
    json_outputs: bool = False,
) -> Result:
    """Refused: there is no iDDS behind this server."""
    return False, no_idds_message(ctx), None


@methods.post("execute_idds_workflow_command", USER)
def execute_idds_workflow_command(
    ctx: RequestContext, *, command_name: str, kwargs: Any = None, json_outputs: bool = False
) -> Result:
    """Refused: there is no iDDS behind this server (pbook *_workflow)."""
    return False, no_idds_message(ctx), None


@methods.get_or_post("decode_idds_enum", USER)
def decode_idds_enum(ctx: RequestContext, *, d: dict[str, Any] | None = None) -> Result:
    """Decode an iDDS constant (``{"__idds_const__": "Enum.Member"}``); other objects come back as sent.

    The real server answers every public function of its iDDS module, this JSON helper of its
    relay included. Naming an iDDS constant needs iDDS's own definitions, so such a call is
    refused with the setting that is missing; anything else is returned unchanged, as there.
    """
    if d is not None and "__idds_const__" in d:
        return False, no_idds_message(ctx), None
    return ok(d)
