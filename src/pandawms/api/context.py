"""What a handler knows about the request it serves."""

from __future__ import annotations

from dataclasses import dataclass

from pandawms.core.runtime import Runtime
from pandawms.model.identity import Identity


@dataclass(frozen=True)
class RequestContext:
    """The runtime, the caller and the few request facts handlers need."""

    rt: Runtime
    who: Identity
    secure: bool
    accept_json: bool
    request_id: str
