"""Why an activated job has not run: queue state, fit, work ahead of it and its global share."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import (
    and_,
    func,
    or_,
    select,
)

from pandawms.core.queues.brokerage import misfit
from pandawms.core.queues.catalogue import list_queues
from pandawms.core.queues.shares import dispatch_order, usage
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.model.states import TERMINAL
from pandawms.monitor.codes import summary
from pandawms.monitor.queries.common import WAITING
from pandawms.monitor.queries.queues import last_pilot_activity, queue_obj, queue_row
from pandawms.monitor.queries.summary import count_live


def _share_reasons(
    rt: Runtime, job_share: str | None, site: str, facts: dict[str, Any], reasons: list[str]
) -> None:
    """Say when jobs of shares further below target wait at the same queue (they go first)."""

    used = usage(rt)
    facts["global_shares"] = {
        name: {"target": round(u["target"], 4), "used": round(u["used"], 4)} for name, u in used.items()
    }
    order = dispatch_order(rt)
    mine = job_share if job_share in used else None
    ahead = order[: order.index(mine)] if mine is not None else order
    if not ahead:
        return
    with read_tx(rt.engine) as conn:
        waiting = {
            share: int(n)
            for share, n in conn.execute(
                select(jobs.c.gshare, func.count())
                .where(
                    jobs.c.computingSite == site, jobs.c.jobStatus == "activated", jobs.c.gshare.in_(ahead)
                )
                .group_by(jobs.c.gshare)
            )
        }
    if not waiting:
        return
    others = ", ".join(f"{n} of {share}" for share, n in sorted(waiting.items()))
    if mine is None:
        reasons.append(
            f"its share ({job_share or 'none'}) is not a configured global share: {others} go first"
        )
    else:
        u = used[mine]
        reasons.append(
            f"share {mine} is over its target ({u['used']:.0%} of busy jobs, target {u['target']:.0%}): "
            f"jobs of shares further below target at {site} go first ({others})"
        )


def why_not_running(rt: Runtime, panda_id: int, quiet_minutes: int = 10) -> dict[str, Any]:
    """Why a defined/activated job has not been dispatched: one verdict and the reasons found.

    Checks, in the order they would block the job: it is not waiting at all; it has no queue
    (brokerage: which queues were considered and why none fits); its queue is unknown, offline or
    does not fit it; other activated jobs at the queue come first (higher priority, or the same
    priority and older); no pilot has taken or updated a job at the queue recently.
    """

    reasons: list[str] = []
    facts: dict[str, Any] = {}
    now = utcnow()
    with read_tx(rt.engine) as conn:
        row = conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().first()
        if row is None:
            archived = conn.execute(
                select(jobs_archive.c.jobStatus).where(jobs_archive.c.PandaID == panda_id)
            ).first()
            if archived is None:
                return {"PandaID": panda_id, "found": False, "verdict": f"no job {panda_id}", "reasons": []}
            return {
                "PandaID": panda_id,
                "found": True,
                "jobStatus": archived[0],
                "verdict": f"the job is {archived[0]} and archived: it will not run again",
                "reasons": [],
            }
        job = dict(row)
        status = job["jobStatus"]
        site = job["computingSite"]
        base = {"PandaID": panda_id, "found": True, "jobStatus": status, "computingSite": site}
        if status in TERMINAL:
            why = summary(job)
            return {
                **base,
                "verdict": f"the job is {status}: it will not run again" + (f" ({why})" if why else ""),
                "reasons": [],
            }
        if status not in WAITING:
            last = job.get("modificationTime")
            return {
                **base,
                "verdict": f"the job is not waiting: it is {status} (a pilot has it; last update {last})",
                "reasons": [],
            }
        if job.get("commandToPilot") == "tobekilled":
            reasons.append("the job is being killed (commandToPilot=tobekilled)")
        if status == "waiting" and job.get("eventService") == 5:
            reasons.append(
                "co-jumbo job: held back while the task's jumbo jobs process its event ranges; it runs "
                "if ranges are left for it and jumbo jobs are off or absent, or after 6 hours, and is "
                "closed once its ranges are all done"
            )
        if status in ("pending", "waiting", "throttled", "assigned"):
            reasons.append(
                f"status {status}: the job is held back before activation; it is not offered to pilots"
            )
        if not site:
            known = list_queues(rt, fresh=True)
            misfits: dict[str, int] = defaultdict(int)
            fitting = []
            for q in known:
                m = misfit(q, job)
                if m:
                    misfits[m] += 1
                else:
                    fitting.append(q.name)
            facts["queues_considered"] = len(known)
            facts["fitting_queues"] = fitting[:20]
            if job.get("brokerageErrorDiag"):
                reasons.append(f"brokerage: {job['brokerageErrorDiag']}")
            if not known:
                reasons.append("no queues are defined: load them with 'pandawms queues load FILE'")
            elif fitting:
                reasons.append(
                    f"{len(fitting)} queue(s) fit now ({', '.join(fitting[:5])}); the brokerage daemon task "
                    "places waiting jobs every few minutes"
                )
            else:
                detail = ", ".join(f"{n} {why}" for why, n in sorted(misfits.items(), key=lambda kv: -kv[1]))
                reasons.append(f"no queue fits this job now: {detail}")
            verdict = reasons[-1] if reasons else "the job has no queue yet"
            return {**base, "verdict": verdict, "reasons": reasons, "facts": facts}
        qrow = queue_row(conn, site)
        if qrow is None:
            reasons.append(
                f"queue {site} is not defined: pilots asking for it are refused; load its definition"
            )
        else:
            queue = queue_obj(qrow)
            facts["queue_status"] = queue.status
            facts["queue_state"] = queue.state
            problem = misfit(queue, job)
            if problem == "not online":
                reasons.append(
                    f"queue {site} is not online (status {queue.status}, state {queue.state or 'ACTIVE'})"
                )
            elif problem:
                reasons.append(f"queue {site} does not fit this job: {problem}")
        prio = job.get("currentPriority") or 0
        if status == "activated":
            ahead = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(
                    jobs.c.computingSite == site,
                    jobs.c.jobStatus == "activated",
                    or_(
                        jobs.c.currentPriority > prio,
                        and_(jobs.c.currentPriority == prio, jobs.c.PandaID < panda_id),
                    ),
                )
            ).scalar_one()
            facts["activated_ahead"] = int(ahead)
            if ahead:
                reasons.append(
                    f"{ahead} other activated job(s) at {site} come first (higher priority than {prio}, "
                    "or the same priority and older)"
                )
        counts = {st: n for (_, st), n in count_live(conn, queue=site).items()}
        last = last_pilot_activity(conn, site, counts)
        facts["last_pilot_activity"] = last
        facts["queue_counts"] = counts
        if last is None:
            reasons.append(f"no pilot has ever taken a job at {site} (that this server still knows of)")
        elif now - last > dt.timedelta(minutes=quiet_minutes):
            minutes = int((now - last).total_seconds() // 60)
            reasons.append(
                f"no pilot has asked for or updated a job at {site} for {minutes} min (last at {last:%Y-%m-%d %H:%M:%S})"
            )
    label = job.get("prodSourceLabel") or "managed"
    needs = [f"prodSourceLabel={label}"]
    for name, unit in (
        ("minRamCount", "MB memory"),
        ("maxDiskCount", "MB disk"),
        ("maxWalltime", "s wall time"),
    ):
        if job.get(name):
            needs.append(f"{job[name]} {unit}")
    facts["pilot_must_offer"] = needs
    if rt.settings.global_shares and status == "activated":
        _share_reasons(rt, job_share=job.get("gshare"), site=site, facts=facts, reasons=reasons)
    else:
        facts["global_shares"] = "not configured: priority alone orders dispatch"
    if not reasons:
        verdict = (
            f"nothing blocks it: it is next in line at {site} for a pilot asking with {', '.join(needs)}"
        )
    else:
        verdict = reasons[0]
    return {**base, "verdict": verdict, "reasons": reasons, "facts": facts}
