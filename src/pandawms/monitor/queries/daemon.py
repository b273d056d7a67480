"""The daemon as the monitor shows it: tasks, their last runs, leases and failures."""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    func,
    select,
)

from pandawms.core.runtime import Runtime, utcnow
from pandawms.daemon.catalog import TASKS
from pandawms.daemon.leases import holders
from pandawms.daemon.runner import enabled_tasks
from pandawms.db.engine import read_tx
from pandawms.db.schema import daemon_runs


def daemon_overview(rt: Runtime, failures: int = 20) -> dict[str, Any]:
    """Each daemon task: schedule, last run and outcome, lease holder, runs and failures in the
    last 24 h; plus the most recent failed runs."""

    now = utcnow()
    day = now - dt.timedelta(hours=24)
    tasks_out = []
    try:
        enabled = enabled_tasks(rt.settings)
    except Exception:  # noqa: BLE001 - a bad daemon_tasks setting must not hide the page
        enabled = list(TASKS.values())
    leases = holders(rt)
    runs = daemon_runs
    with read_tx(rt.engine) as conn:
        for task in enabled:
            last = (
                conn.execute(
                    select(runs).where(runs.c.task == task.name).order_by(runs.c.started.desc()).limit(1)
                )
                .mappings()
                .first()
            )
            outcomes = {
                outcome: int(n)
                for outcome, n in conn.execute(
                    select(runs.c.outcome, func.count())
                    .where(runs.c.task == task.name, runs.c.started >= day)
                    .group_by(runs.c.outcome)
                )
            }
            lease = leases.get(task.name)
            tasks_out.append(
                {
                    "task": task.name,
                    "description": task.description,
                    "period": task.period,
                    "fleet_wide": task.fleet_wide,
                    "last_run": last["started"] if last else None,
                    "last_finished": last["finished"] if last else None,
                    "last_outcome": last["outcome"] if last else None,
                    "last_node": last["node"] if last else None,
                    "last_message": last["message"] if last else None,
                    "next_run": (last["started"] + dt.timedelta(seconds=task.period)) if last else None,
                    "lease_holder": lease["owner"] if lease and lease["expires"] > now else None,
                    "lease_expires": lease["expires"] if lease else None,
                    "runs_24h": outcomes,
                    "failures_24h": sum(n for o, n in outcomes.items() if o not in ("ok", "running")),
                }
            )
        max_id = conn.execute(select(func.max(runs.c.id))).scalar()
        recent: list[dict[str, Any]] = []
        if max_id is not None:
            recent = [
                dict(r)
                for r in conn.execute(
                    select(runs)
                    .where(runs.c.id > int(max_id) - 50000, runs.c.outcome.not_in(("ok", "running")))
                    .order_by(runs.c.id.desc())
                    .limit(failures)
                ).mappings()
            ]
    return {"now": now, "tasks": tasks_out, "recent_failures": recent}


@dataclass
class _RunCounts:
    """Counts of the settled runs (ids up to ``settled_id``), kept by the runtime."""

    settled_id: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def daemon_run_totals(rt: Runtime) -> dict[tuple[str, str], int]:
    """Finished daemon runs by (task, outcome) since the table began, counted incrementally.

    Rows up to the oldest still-running one never change again, so their counts are kept and
    only newer rows are read on each scrape; the table grows forever and is never rescanned.
    """
    runs = daemon_runs
    state = rt.kept("monitor.daemon_run_counts", _RunCounts)
    with state.lock:
        with read_tx(rt.engine) as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.task, runs.c.outcome)
                .where(runs.c.id > state.settled_id)
                .order_by(runs.c.id)
            ).all()
        pending: dict[tuple[str, str], int] = defaultdict(int)
        settled = True
        for run_id, task, outcome in rows:
            if outcome == "running":
                settled = False
                continue
            if settled:
                state.counts[(task, outcome)] = state.counts.get((task, outcome), 0) + 1
                state.settled_id = int(run_id)
            else:
                pending[(task, outcome)] += 1
        total = dict(state.counts)
        for k, n in pending.items():
            total[k] = total.get(k, 0) + n
        return total


def daemon_last_runs(rt: Runtime) -> dict[str, tuple[dt.datetime | None, str | None]]:
    """(start, outcome) of each registered task's newest run (one index probe per task)."""
    # The runner module registers the tasks; the bare registry is empty in an httpd worker.

    runs = daemon_runs
    out: dict[str, tuple[dt.datetime | None, str | None]] = {}
    with read_tx(rt.engine) as conn:
        for name in TASKS:
            row = conn.execute(
                select(runs.c.started, runs.c.outcome)
                .where(runs.c.task == name)
                .order_by(runs.c.started.desc())
                .limit(1)
            ).first()
            if row is not None:
                out[name] = (row[0], row[1])
    return out
