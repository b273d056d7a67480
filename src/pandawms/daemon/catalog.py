"""Every periodic task the daemon knows, assembled from the periodic modules listed here.

Adding one: define it in the ``periodic`` module of its domain with ``@periodic.task(...)``; a new
module is added to :data:`SETS`. The monitor reads this catalogue (never the runner).
"""

from __future__ import annotations

from pandawms.daemon.periodic import harvester, jobs, ops, tasks
from pandawms.daemon.registry import Task

SETS = (jobs.periodic, harvester.periodic, tasks.periodic, ops.periodic)


def _build() -> dict[str, Task]:
    table: dict[str, Task] = {}
    for periodic in SETS:
        for task in periodic.tasks:
            if task.name in table:
                raise RuntimeError(f"two periodic tasks are named {task.name!r}")
            table[task.name] = task
    return table


#: name -> task, in the order the sets list them.
TASKS: dict[str, Task] = _build()
