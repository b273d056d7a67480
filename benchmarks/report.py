"""Markdown tables from the JSON files ``benchmarks/run_all.sh`` leaves in ``benchmarks/results``.

python -m benchmarks.report [results-dir]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _load_avg(result: dict[str, Any]) -> str:
    before = result.get("loadavg_before") or ["?"]
    after = result.get("loadavg_after") or ["?"]
    return f"{before[0]} → {after[0]}"


def _cores(result: dict[str, Any]) -> str:
    cores = result.get("cpu_cores_used") or {}
    keys = ("server", "load generator", "machine busy")
    return " / ".join(str(cores.get(k, "-")) for k in keys) if cores else "-"


def load_table(directory: Path) -> str:
    """One row per pandabench run: the headline figure, its latency and the load average."""
    rows = [
        "| run | database | result | p50 / p95 / p99 ms | errors | server RSS first → max MiB | cores used: server / load generator / whole machine | load avg (1 min) before → after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, method in (
        ("dispatch", "legacy getJob"),
        ("heartbeat", "legacy updateJob running"),
        ("lifecycle", "legacy updateJob finished"),
        ("soak", "legacy updateJob finished"),
    ):
        for db in ("pg", "sqlite"):
            result = _load(directory, f"{scenario}-{db}")
            if result is None:
                continue
            m = result["methods"].get(method, {})
            if scenario == "dispatch":
                figure = f"**{result['dispatched_per_s']} jobs/s** ({result['dispatched']} jobs)"
            elif scenario == "heartbeat":
                figure = f"**{m.get('per_s')} heartbeats/s** ({m.get('count')} in {result['phases_s'].get('measure')} s)"
            else:
                proj = result.get("projection") or {}
                figure = (
                    f"**{proj.get('jobs_completed_per_s')} jobs/s** completed; 1.5M jobs in "
                    f"**{proj.get('hours_for_1_5M_jobs')} h**"
                )
            errors = sum(v["errors"] for k, v in result["methods"].items() if not k.startswith("(setup)"))
            rss = result.get("rss_kb") or {}
            rss_s = f"{rss.get('first', 0) // 1024} → {rss.get('max', 0) // 1024}" if rss else "-"
            if scenario == "soak":
                rss_s += f" (slope {result.get('rss_kib_per_min_second_half')} KiB/min, 2nd half)"
            rows.append(
                f"| {scenario} | {'PostgreSQL' if db == 'pg' else 'SQLite'} | {figure} | "
                f"{m.get('p50_ms')} / {m.get('p95_ms')} / {m.get('p99_ms')} | {errors} | {rss_s} | {_cores(result)} | "
                f"{_load_avg(result)} |"
            )
    return "\n".join(rows)


def growth_table(directory: Path) -> str:
    rows = [
        "| database | live rows | archive rows | dispatch p50 / p99 ms | heartbeat p50 / p99 ms | get_status p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for db in ("pg", "sqlite"):
        result = _load(directory, f"growth-{db}")
        if result is None:
            continue
        for step in result["steps"]:
            rows.append(
                f"| {'PostgreSQL' if db == 'pg' else 'SQLite'} | {step['live_rows']:,} | {step['archive_rows']:,} | "
                f"{step['dispatch']['p50_ms']} / {step['dispatch']['p99_ms']} | "
                f"{step['heartbeat']['p50_ms']} / {step['heartbeat']['p99_ms']} | "
                f"{step['get_status']['p50_ms']} / {step['get_status']['p99_ms']} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    directory = Path(args[0] if args else "benchmarks/results")
    print(load_table(directory))
    print()
    print(growth_table(directory))
    scale = _load(directory, "scaleout-pg")
    if scale is not None:
        print()
        print(json.dumps({k: v for k, v in scale.items() if k != "balancer_events"}, indent=1))
    uptime = directory / "uptime.log"
    if uptime.exists():
        print()
        print(uptime.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
