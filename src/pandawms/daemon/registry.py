"""The daemon tasks: name, what it does, how often, and whether one node runs it for the fleet."""

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


TASKS: dict[str, Task] = {}


def task(name: str, period: int, fleet_wide: bool = True) -> Callable[[TaskFunc], TaskFunc]:
    """Register ``func`` as a daemon task; its docstring's first line describes it."""

    def register(func: TaskFunc) -> TaskFunc:
        doc = (func.__doc__ or "").strip().splitlines()
        TASKS[name] = Task(name, func, period, fleet_wide, doc[0] if doc else "")
        return func

    return register
