"""The same load on two versions of pandawms, alternating, to show a change kept the figures.

    python -m benchmarks.before_after REV [--rounds 2] [--scenarios dispatch,heartbeat] [--api legacy,v1]

``REV`` (a commit, tag or branch) is checked out into a temporary git worktree; each round runs
every scenario once on ``REV`` and once on the working tree, alternating which goes first, with
the harness of the working tree and a server started from each tree's source (``PYTHONPATH`` of
the server only). The harness is the same for both, so only the server differs. Results go to
``benchmarks/results/before-after/`` and a table of medians is printed (Markdown).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Each scenario's harness arguments (smaller than run_all.sh's, so both versions fit a quiet window).
SCENARIOS: dict[str, list[str]] = {
    "dispatch": ["--scenario", "dispatch", "--jobs", "20000", "--pilots", "200", "--duration", "120"],
    "heartbeat": [
        "--scenario",
        "heartbeat",
        "--jobs",
        "10000",
        "--pilots",
        "200",
        "--measure",
        "30",
        "--duration",
        "120",
    ],
    "rate1000": [
        "--scenario",
        "dispatch",
        "--jobs",
        "20000",
        "--pilots",
        "200",
        "--rate",
        "1000",
        "--duration",
        "120",
    ],
    "lifecycle": [
        "--scenario",
        "lifecycle",
        "--heartbeats",
        "0",
        "--jobs",
        "15000",
        "--pilots",
        "100",
        "--duration",
        "120",
    ],
}


def _headline(result: dict[str, Any], scenario: str) -> tuple[float, float]:
    """The scenario's rate and its p99 in ms."""
    methods = result.get("methods", {})
    if scenario in ("dispatch", "rate1000"):
        name = next((m for m in methods if "getJob" in m or "acquire_jobs" in m), None)
        rate = float(result.get("dispatched_per_s") or 0.0)
    elif scenario == "lifecycle":
        name = next((m for m in methods if m.endswith("finished")), None)
        rate = float((result.get("projection") or {}).get("jobs_completed_per_s") or 0.0)
    else:
        name = next((m for m in methods if m.endswith("running")), None)
        rate = float(methods.get(name, {}).get("per_s", 0.0)) if name else 0.0
    p99 = float(methods.get(name, {}).get("p99_ms", 0.0)) if name else 0.0
    return rate, p99


def _run(src: Path, scenario: str, api: str, out: Path, db: str) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.pandabench", "--start-server", db, "--workers", "2",
        *SCENARIOS[scenario], "--api", api, "--server-env", f"PYTHONPATH={src}", "--json-out", str(out),
        "--bench-db", "pandawms_before_after",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=900)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rev", help="the version to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenarios", default="dispatch,heartbeat")
    parser.add_argument("--api", default="legacy,v1")
    parser.add_argument("--db", default="postgresql", choices=("postgresql", "sqlite"))
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results" / "before-after"
    results.mkdir(parents=True, exist_ok=True)
    figures: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pandawms-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.rev], cwd=ROOT, check=True)
        try:
            trees = {"before": before / "src", "after": ROOT / "src"}
            for round_no in range(args.rounds):
                order = ["before", "after"] if round_no % 2 == 0 else ["after", "before"]
                for scenario in args.scenarios.split(","):
                    for api in args.api.split(","):
                        for which in order:
                            out = results / f"{scenario}-{api}-{which}-{round_no}.json"
                            result = _run(trees[which], scenario, api, out, args.db)
                            figure = _headline(result, scenario)
                            figures.setdefault((scenario, api, which), []).append(figure)
                            print(
                                f"round {round_no} {scenario} {api} {which}: {figure[0]:.0f}/s p99 {figure[1]:.0f} ms"
                            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    print(f"\n| scenario | API | {args.rev} (before) /s, p99 ms | working tree (after) /s, p99 ms | change |")
    print("| --- | --- | --- | --- | --- |")
    for scenario in args.scenarios.split(","):
        for api in args.api.split(","):
            b = figures[(scenario, api, "before")]
            a = figures[(scenario, api, "after")]
            rb, ra = statistics.median(x[0] for x in b), statistics.median(x[0] for x in a)
            pb, pa = statistics.median(x[1] for x in b), statistics.median(x[1] for x in a)
            change = f"{(ra - rb) / rb * 100:+.1f} %" if rb else "-"
            print(f"| {scenario} | {api} | {rb:,.0f}, {pb:.0f} | {ra:,.0f}, {pa:.0f} | {change} |")


if __name__ == "__main__":
    main()
