"""Which global share goes first at dispatch, from what runs now (see :mod:`pandawms.model.shares`).

Running jobs are counted by ``gshare`` over the whole live table (shares are fractions of the
grid, not of one queue). The count is kept by the runtime for :data:`USAGE_TTL` seconds: the
order of shares changes slowly, and dispatch must not scan the running jobs on every getJob.
Without ``global_shares`` nothing here runs and dispatch orders by priority alone.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs
from pandawms.model.shares import parse_shares, share_order

#: Seconds the running-jobs count by share is reused.
USAGE_TTL = 30.0
#: Statuses that hold a slot: what a share's fraction is measured on.
BUSY = ("sent", "starting", "running")


def running_by_share(rt: Runtime, fresh: bool = False) -> dict[str, int]:
    """Jobs holding a slot, by gshare ("" for none); kept by the runtime unless ``fresh``."""
    key = ("running_by_share", rt.settings.global_shares)
    now = time.monotonic()
    hit = None if fresh else rt.remembered(key, USAGE_TTL)
    if hit is not None:
        return dict(hit)
    with read_tx(rt.engine) as conn:
        counts = {
            (share or ""): int(n)
            for share, n in conn.execute(
                select(jobs.c.gshare, func.count()).where(jobs.c.jobStatus.in_(BUSY)).group_by(jobs.c.gshare)
            )
        }
    rt.remember(key, counts, at=now)
    return counts


def _targets(rt: Runtime) -> dict[str, float]:
    """The parsed setting, kept by the runtime (dispatch asks on every getJob). Not to be changed."""
    text = rt.settings.global_shares
    return rt.kept(("shares.targets", text), lambda: parse_shares(text))


def dispatch_order(rt: Runtime) -> list[str]:
    """Configured shares, furthest below target first; empty when no shares are configured."""
    if not rt.settings.global_shares:
        return []
    return share_order(_targets(rt), running_by_share(rt))


def usage(rt: Runtime) -> dict[str, dict[str, float]]:
    """Per configured share: target and current fraction of the busy jobs (for ``jobs why``)."""
    targets = _targets(rt)
    running = running_by_share(rt)
    total = sum(n for share, n in running.items() if share in targets)
    return {
        share: {"target": target, "used": (running.get(share, 0) / total) if total else 0.0}
        for share, target in targets.items()
    }
