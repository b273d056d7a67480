"""Who may act on a job or a task: the owner, a production or manager identity, or anyone in open mode.

Pure decisions on an :class:`~pandawms.model.identity.Identity` and a stored row, shared by the
job and task domains (a user's job may join only a task the user may act on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pandawms.model.identity import Identity


def may_kill(who: Identity, job: Mapping[str, Any], open_mode: bool) -> bool:
    """Owner, production role or manager, or anyone when the server runs in open mode.

    The owner is the job's ``prodUserID`` (a DN) compared whole with the caller's, proxy CNs
    aside: ``prodUserName`` is a display name that many people can share.
    """
    if open_mode or who.is_production or "manager" in who.roles:
        return True
    return who.owns(job.get("prodUserID"))


def may_act(who: Identity, task: Mapping[str, Any], open_mode: bool) -> bool:
    """The owner, a production or manager identity, or anyone when the server runs open.

    The owner is the task's ``dn`` (the submitter's DN, or a token user's issuer-and-subject
    DN), compared whole: ``userName`` is a display name that many people can share.
    """
    if open_mode or who.is_production or "manager" in who.roles:
        return True
    return who.owns(task.get("dn"))
