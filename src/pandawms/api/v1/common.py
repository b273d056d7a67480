"""Parameters and helpers that more than one v1 URL module uses.

Kept apart from the handlers so that a module never imports another module's handlers (and so
the legacy calls can share the iDDS refusal without depending on a v1 URL module).
"""

from __future__ import annotations

from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.core.jobs.read import MAX_IDS_PER_READ

#: PandaIDs of a read or a kill (``job/*``, ``pilot/get_job_status``), bounded like every read.
IDS = Param("int_list", max_items=MAX_IDS_PER_READ)

#: ``timeout`` of the status reads: declared by the real server (its database wait); reads here
#: are bounded by the pool timeout, so it is accepted and not used.
STATUS_TIMEOUT = Param("int", 60)

#: The Harvester instance a call speaks for (``harvester/*``, ``pilot/update_worker_status``).
HARVESTER_ID = Param("str")


def no_idds_message(ctx: RequestContext) -> str:
    """Why a workflow call cannot be served here."""
    if not ctx.rt.settings.idds_url:
        return "no iDDS configured: set PANDA_IDDS_URL"
    return f"pandawms does not relay workflow commands to iDDS ({ctx.rt.settings.idds_url[:200]})"
