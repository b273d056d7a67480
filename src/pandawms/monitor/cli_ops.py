"""Operator commands next to the monitor's views: ``jobs reassign`` and ``tasks priority``.

They act on the database as the server's own manager identity (whoever can run them can read
the database credentials anyway) through the same core functions as the v1 methods, and leave
an audit row naming the CLI, as a call over the API would. Each takes an open Runtime:
:mod:`pandawms.monitor.cli` opens the database and turns its errors into one line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pandawms.model.identity import Identity

#: Who the CLI acts as: a manager (and so production) identity, shown in the audit trail.
OPERATOR = Identity(dn="/CN=pandawms CLI", roles=frozenset({"manager", "production"}), method="local")


def jobs_reassign(rt: Any, args: argparse.Namespace) -> int:
    """``pandawms jobs reassign PANDAID... [--site QUEUE]``."""
    from pandawms.core.jobs.commands import reassign_jobs
    from pandawms.core.ops import audit

    done = reassign_jobs(rt, args.panda_ids, OPERATOR, args.site)
    for panda_id, ok in zip(args.panda_ids, done, strict=True):
        where = f"to {args.site}" if args.site else "back to brokerage"
        print(
            f"{panda_id}: {'reassigned ' + where if ok else 'not reassigned (unknown, at a pilot or ended, or the queue does not fit)'}"
        )
    targets = "PandaID=" + ",".join(str(i) for i in args.panda_ids)
    audit.record(rt, OPERATOR, "job/reassign", targets[:1000], "ok" if all(done) else "failed")
    return 0 if all(done) else 1


def tasks_priority(rt: Any, args: argparse.Namespace) -> int:
    """``pandawms tasks priority TASKID N``."""
    from pandawms.core.ops import audit
    from pandawms.core.tasks.changes import change_priority

    reply = change_priority(rt, args.task_id, args.priority, OPERATOR)
    print(reply.message, file=sys.stdout if reply.success else sys.stderr)
    audit.record(
        rt,
        OPERATOR,
        "task/change_priority",
        f"jediTaskID={args.task_id}",
        "ok" if reply.success else "failed",
        reply.message,
    )
    return 0 if reply.success else 1
