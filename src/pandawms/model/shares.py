"""Global shares: the fractions of the grid that kinds of work (``gshare``) are meant to get.

PanDA gives each job a ``gshare`` (e.g. "Express", "MC Simulation Full", "User Analysis") and
each share a target fraction of what runs. When jobs of several shares wait at one queue, the
share furthest below its target goes first; within a share, priority decides. pandawms keeps
the shares flat (one level, no nesting) and reads them from the ``global_shares`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping


def parse_shares(text: str) -> dict[str, float]:
    """``"Express=10, MC Simulation Full=60, User Analysis=30"`` -> {name: fraction of 1}.

    Values are relative weights (percentages or anything else); they are scaled to sum to 1.
    Raises ValueError naming the bad entry.
    """
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{part.strip()!r} is not NAME=WEIGHT")
        if len(name) > 32:
            raise ValueError(f"share name {name!r} is longer than 32 characters (the gshare column)")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight of share {name!r} is not a number: {value.strip()!r}") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"weight of share {name!r} must be a finite number >= 0, got {value.strip()}")
        if name in weights:
            raise ValueError(f"share {name!r} is named twice")
        weights[name] = weight
    total = sum(weights.values())
    if weights and total <= 0:
        raise ValueError("the share weights add up to 0")
    return {name: weight / total for name, weight in weights.items()}


def share_order(targets: Mapping[str, float], running: Mapping[str, int]) -> list[str]:
    """Shares from the furthest below target to the furthest above.

    ``running`` counts running jobs by share (jobs of shares not in ``targets`` are left out of
    the fractions). Ties go to the larger target, then the name, so the order is stable.
    """
    total = sum(n for share, n in running.items() if share in targets)

    def deficit(share: str) -> float:
        used = running.get(share, 0) / total if total else 0.0
        return targets[share] - used

    return sorted(targets, key=lambda share: (-deficit(share), -targets[share], share))
