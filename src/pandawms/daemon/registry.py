"""Periodic tasks of the daemon: name, what it does, how often, and whether one node runs it for the fleet.

(A daemon task is periodic server work; a JEDI task, :mod:`pandawms.core.tasks`, is a user's
unit of work that becomes jobs.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pandawms.core.runtime import Runtime

TaskFunc = Callable[[Runtime], str]


@dataclass(frozen=True)
class Task:
    """One periodic task. ``fleet_wide`` tasks run once per period across all nodes."""

    name: str
    func: TaskFunc
    period: int
    fleet_wide: bool = True
    description: str = ""

    @property
    def timeout(self) -> int:
        """A run longer than this is killed and reported (PanDA's rule: 3 periods, at most period + 1 h)."""
        return min(3 * self.period, self.period + 3600)


class PeriodicSet:
    """The periodic work one module defines, collected by its ``task`` decorator.

    Nothing is registered globally: :mod:`pandawms.daemon.catalog` lists the sets explicitly and
    builds the daemon's table from them, so what runs is visible in one place.
    """

    def __init__(self) -> None:
        self.tasks: list[Task] = []

    def task(self, name: str, period: int, fleet_wide: bool = True) -> Callable[[TaskFunc], TaskFunc]:
        """Add ``func`` as a periodic task; its docstring's first line describes it."""

        def register(func: TaskFunc) -> TaskFunc:
            doc = (func.__doc__ or "").strip().splitlines()
            self.tasks.append(Task(name, func, period, fleet_wide, doc[0] if doc else ""))
            return func

        return register
