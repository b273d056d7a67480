"""Debug mode of a job: the pilot streams the payload's output tail to the server.

Turning it on marks the job's ``specialHandling`` with ``debug``; from the next heartbeat the
pilot is answered with the ``debug`` command (see :mod:`pandawms.core.jobs.heartbeat`), runs in debug
mode and sends its stdout tail in each update's ``stdout``, which is kept in
``job_debug_output``. Only jobs not yet ended can change, only their owner (or a production
identity) may ask, and a user may have at most three jobs in debug mode at once, as on the real
server.
"""

from __future__ import annotations

from sqlalchemy import select

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import jobs
from pandawms.db.schema_user import job_debug_output
from pandawms.model.identity import Identity

#: Statuses in which the debug mode of a job can change.
CHANGEABLE = ("defined", "activated", "running", "sent", "starting", "assigned")
#: Jobs a user (not a production identity) may have in debug mode at once.
MAX_DEBUG_JOBS = 3
#: Tags of ``specialHandling`` that mean debug mode ("dm" is JobSpec's short tag).
DEBUG_TAGS = ("debug", "dm")
SUCCEEDED = "Succeeded"


def _tags(handling: str | None) -> list[str]:
    return [tag for tag in (handling or "").split(",") if tag]


def is_debug(handling: str | None) -> bool:
    """Whether a job's ``specialHandling`` puts it in debug mode."""
    return any(tag in DEBUG_TAGS for tag in _tags(handling))


def set_debug_mode(
    rt: Runtime, panda_id: int, mode_on: bool, who: Identity, privileged: bool
) -> tuple[bool, str]:
    """Turn debug mode on or off; (changed or already so, message as the real server words it).

    ``privileged``: the caller may act on any job (production role, a pilot for the job it
    runs, or an open server); otherwise only on jobs whose ``prodUserName`` is the caller's.
    """
    with write_tx(rt.engine) as conn:
        row = conn.execute(
            select(jobs.c.jobStatus, jobs.c.prodUserName, jobs.c.specialHandling)
            .where(jobs.c.PandaID == panda_id)
            .with_for_update()
        ).first()
        if row is None:
            return False, f"PandaID={panda_id} not found in active DB"
        status, owner, handling = row
        if status not in CHANGEABLE:
            return False, (
                f"Cannot set debugMode since the job status is {status} which is not in one of {list(CHANGEABLE)}"
            )
        if not privileged and owner != who.name:
            return False, "Permission denied. Not the owner or production manager"
        tags = _tags(handling)
        if mode_on == is_debug(handling):
            return True, SUCCEEDED
        if mode_on:
            if not privileged:
                others = [
                    int(r[0])
                    for r in conn.execute(
                        select(jobs.c.PandaID, jobs.c.specialHandling).where(
                            jobs.c.prodUserName == owner,
                            jobs.c.jobStatus.in_(CHANGEABLE),
                            jobs.c.specialHandling.like("%d%"),
                        )
                    )
                    if is_debug(r[1])
                ]
                if len(others) >= MAX_DEBUG_JOBS:
                    return False, (
                        "You already hit the limit on the maximum number of debug subjobs "
                        f"({MAX_DEBUG_JOBS} jobs). Please set the debug mode off for one of the "
                        f"following PandaIDs : {','.join(str(i) for i in sorted(others))}"
                    )
            tags.append("debug")
        else:
            tags = [tag for tag in tags if tag not in DEBUG_TAGS]
        conn.execute(
            jobs.update().where(jobs.c.PandaID == panda_id).values(specialHandling=",".join(tags) or None)
        )
    return True, SUCCEEDED


def debug_output(rt: Runtime, panda_id: int) -> str | None:
    """The last stdout tail the job's pilot sent in debug mode."""
    with read_tx(rt.engine) as conn:
        return conn.execute(
            select(job_debug_output.c.stdOut).where(job_debug_output.c.PandaID == panda_id)
        ).scalar_one_or_none()
