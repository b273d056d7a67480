"""pandawms and the real PanDA server side by side, driven by the same load generator.

Each run measures both servers, in alternating order (real first in odd runs, pandawms first in
even ones, so a machine that slows down over time does not favour one of them), each on a fresh
database of its own on the same PostgreSQL, each with the same number of server processes:

* dispatch: ``--jobs`` jobs submitted (v1 ``job/submit``), then ``--pilots`` pilots call v1
  ``pilot/acquire_jobs`` (one job a call, as pilot 3.11 sends it) until the queue is empty;
* heartbeat: ``--jobs`` more jobs submitted and dispatched and moved to running (not measured),
  then the pilots send v1 ``pilot/update_job`` ``running`` heartbeats for ``--measure`` s.

Both go through ``benchmarks.pandabench`` with the same arguments and the same checks of every
answer (HTTP 200, a JSON envelope with ``success``, a pilot ``StatusCode`` of 0, no
``tobekilled`` command, no PandaID handed out twice). The server's CPU is read from
``/proc/<pid>/stat`` of its whole process tree (pandawms: master and workers; the real server:
Apache and its mod_wsgi daemons) over the measuring window; RSS is the tree's largest total
during the run. PostgreSQL's CPU is reported apart (each server's own database's backends).

    python -m benchmarks.peer.compare --runs 3 --pilots 100 --jobs 4000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import pandabench
from benchmarks.peer import realserver

ACQUIRE = "v1 pilot/acquire_jobs"
HEARTBEAT = "v1 pilot/update_job running"


def _bench(argv: list[str], log: io.TextIOBase) -> dict[str, Any]:
    """One pandabench run; its printed table goes to the log."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = pandabench.main([*argv, "--json-out", out.name])
        log.write(buffer.getvalue() + "\n")
        log.flush()
        if code:
            raise RuntimeError(f"pandabench {' '.join(argv)} exited {code}")
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def _scenario_args(args: argparse.Namespace, scenario: str) -> list[str]:
    common = [
        "--api",
        "v1",
        "--pilots",
        str(args.pilots),
        "--jobs",
        str(args.jobs),
        "--duration",
        str(args.duration),
    ]
    if scenario == "heartbeat":
        return ["--scenario", "heartbeat", *common, "--measure", str(args.measure)]
    # The whole dispatch of --jobs is the window, for both servers: pandawms hands 4,000 jobs out
    # in about two seconds, less than pandabench's default warm-up.
    return ["--scenario", "dispatch", *common, "--warm-up", "0"]


def _summary(result: dict[str, Any], method: str, calls: int) -> dict[str, Any]:
    """The figures of the table from one pandabench result."""
    window = result["phases_s"]["measure"]
    cores = result.get("cpu_cores_used") or {}
    measured = {k: v for k, v in result["methods"].items() if not k.startswith("(setup)")}
    errors = sum(v["errors"] for v in measured.values()) + int(result.get("duplicate_dispatches") or 0)

    def per_1000(cores_used: float) -> float | None:
        return round(cores_used * window / calls * 1000, 2) if calls else None

    rss = result.get("rss_kb") or {}
    return {
        "calls": calls,
        "window_s": window,
        "method": measured.get(method, {}),
        "server_cpu_s_per_1000": per_1000(cores.get("server", 0.0)),
        "postgres_cpu_s_per_1000": per_1000(cores.get("postgres", 0.0)),
        "server_cores": cores.get("server"),
        "rss_mib_max": round(rss.get("max", 0) / 1024) if rss else None,
        "errors": errors,
        "duplicate_dispatches": result.get("duplicate_dispatches"),
        "db_connections_opened": result.get("db_connections_opened"),
        "loadavg": [result.get("loadavg_before"), result.get("loadavg_after")],
    }


def measure_pandawms(args: argparse.Namespace, log: io.TextIOBase) -> dict[str, Any]:
    out = {}
    for scenario in ("dispatch", "heartbeat"):
        argv = [
            "--start-server",
            "postgresql",
            "--workers",
            str(args.processes),
            "--admin-url",
            args.admin_url,
            "--bench-db",
            "pandawms_peer_ours",
        ]
        result = _bench([*argv, *_scenario_args(args, scenario)], log)
        out[scenario] = result
    return out


def measure_real(args: argparse.Namespace, cfg: realserver.PeerConfig, log: io.TextIOBase) -> dict[str, Any]:
    out = {}
    db_url = f"postgresql+psycopg://{cfg.pg_user}@{cfg.pg_host}:{cfg.pg_port}/{cfg.database}"
    for scenario in ("dispatch", "heartbeat"):
        with realserver.serving(cfg) as (url, pid, _run):
            argv = [
                "--url",
                url,
                "--server-pid",
                str(pid),
                "--db-url",
                db_url,
                "--db-name",
                cfg.database,
                "--admin-url",
                args.admin_url,
                "--analyze",
                "doma_panda.jobsactive4,doma_panda.jobsdefined4,doma_panda.filestable4",
            ]
            out[scenario] = _bench([*argv, *_scenario_args(args, scenario)], log)
    return out


def summarise(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    dispatch, heartbeat = raw["dispatch"], raw["heartbeat"]
    hb_calls = int(heartbeat["methods"].get(HEARTBEAT, {}).get("count", 0))
    d = _summary(dispatch, ACQUIRE, int(dispatch["dispatched"]))
    h = _summary(heartbeat, HEARTBEAT, hb_calls)
    return {
        "jobs_per_s": dispatch["dispatched_per_s"],
        "dispatched": dispatch["dispatched"],
        "submitted": dispatch["submitted"],
        "updates_per_s": heartbeat["methods"].get(HEARTBEAT, {}).get("per_s"),
        "dispatch": d,
        "heartbeat": h,
        "rss_mib_max": max(x for x in (d["rss_mib_max"], h["rss_mib_max"]) if x is not None),
        "errors": d["errors"] + h["errors"],
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def _sessions(summary: dict[str, Any]) -> float | None:
    """Growth of ``pg_stat_database.sessions`` over both windows (PostgreSQL's own count)."""
    values = [
        ((summary[k].get("db_connections_opened") or {}).get("in_window") or {}).get("pg_sessions")
        for k in ("dispatch", "heartbeat")
    ]
    return None if None in values else sum(v for v in values if v is not None)


def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The side-by-side table: medians over runs, every run's value in brackets."""
    rows = [
        f"pandawms vs the real PanDA server {args.version}: {args.runs} alternating run(s), {args.pilots} pilots, "
        f"{args.jobs} jobs, heartbeats for {args.measure} s, {args.processes} server processes each "
        f"(real: Apache mod_wsgi, {args.threads} threads per process); PostgreSQL 127.0.0.1:{args.pg_port}",
        "",
        "| median of runs (each run) | real server | pandawms | ratio |",
        "| --- | --- | --- | --- |",
    ]

    def row(
        label: str, pick: Callable[[dict[str, Any]], float | None], ratio: bool = True, digits: int = 1
    ) -> None:
        real = [pick(r["real"]) for r in runs]
        ours = [pick(r["pandawms"]) for r in runs]
        m_real, m_ours = _median(real), _median(ours)

        def cell(median: float | None, values: list[float | None]) -> str:
            each = ", ".join("-" if v is None else f"{v:,.{digits}f}" for v in values)
            return "-" if median is None else f"{median:,.{digits}f} ({each})"

        ratio_s = f"{m_ours / m_real:.1f}x" if ratio and m_real and m_ours is not None else ""
        rows.append(f"| {label} | {cell(m_real, real)} | {cell(m_ours, ours)} | {ratio_s} |")

    row("`pilot/acquire_jobs` (1 job a call), jobs/s", lambda s: s["jobs_per_s"])
    row("`pilot/update_job` running, updates/s", lambda s: s["updates_per_s"])
    row("server CPU s per 1,000 dispatches", lambda s: s["dispatch"]["server_cpu_s_per_1000"], False, 2)
    row("server CPU s per 1,000 heartbeats", lambda s: s["heartbeat"]["server_cpu_s_per_1000"], False, 2)
    row("PostgreSQL CPU s per 1,000 dispatches", lambda s: s["dispatch"]["postgres_cpu_s_per_1000"], False, 2)
    row(
        "PostgreSQL CPU s per 1,000 heartbeats", lambda s: s["heartbeat"]["postgres_cpu_s_per_1000"], False, 2
    )
    row("server memory, RSS MiB (largest)", lambda s: s["rss_mib_max"], False, 0)
    row("new PostgreSQL sessions in the measuring windows", _sessions, False, 0)
    row("errors (failed checks, duplicate dispatches)", lambda s: s["errors"], False, 0)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pilots", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--measure", type=float, default=30, help="heartbeat window, seconds")
    parser.add_argument("--duration", type=float, default=1200, help="hard limit of one scenario, seconds")
    parser.add_argument("--processes", type=int, default=2, help="server processes (both servers)")
    parser.add_argument("--threads", type=int, default=4, help="threads per mod_wsgi process (real server)")
    parser.add_argument(
        "--db-connections",
        type=int,
        default=0,
        help="real server's connections per process (0 = one per thread)",
    )
    parser.add_argument("--version", default=os.environ.get("PANDA_SERVER_VERSION", "1.0.4"))
    parser.add_argument("--cache", type=Path, default=realserver.default_cache())
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--name", default="peer", help="results go to <out>/<name>.json and .txt")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--keep-databases", action="store_true", help="leave the real server's databases")
    args = parser.parse_args(argv)
    # A timeout's SIGTERM unwinds like Ctrl-C, so Apache and the databases are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    venv = args.cache / f"venv-{args.version}"
    if not (venv / ".complete").exists():
        print(f"no installation in {venv}: run benchmarks/peer/setup.sh first", file=sys.stderr)
        return 2
    cfg = realserver.PeerConfig(
        cache=args.cache,
        venv=venv,
        pg_port=args.pg_port,
        processes=args.processes,
        threads=args.threads,
        db_connections=args.db_connections,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    runs: list[dict[str, Any]] = []
    raw_runs: list[dict[str, Any]] = []
    with (args.out / f"{args.name}.log").open("w") as log:
        realserver.clean_runs(cfg)
        t0 = time.monotonic()
        schema = realserver.build_schema(cfg, args.cache / "schema-build.log")
        print(
            f"real server's schema {schema['schema_version']} built in {time.monotonic() - t0:.0f} s, "
            f"{len(schema['errors'])} error(s): {schema['errors']}",
            flush=True,
        )
        try:
            for i in range(args.runs):
                order = ("real", "pandawms") if i % 2 == 0 else ("pandawms", "real")
                summary: dict[str, Any] = {"order": list(order)}
                raw: dict[str, Any] = {}
                for server in order:
                    t1 = time.monotonic()
                    raw[server] = (
                        measure_real(args, cfg, log) if server == "real" else measure_pandawms(args, log)
                    )
                    summary[server] = summarise(raw[server])
                    s = summary[server]
                    print(
                        f"run {i + 1}/{args.runs} {server}: {s['jobs_per_s']} jobs/s, {s['updates_per_s']} updates/s, "
                        f"RSS {s['rss_mib_max']} MiB, {s['errors']} errors ({time.monotonic() - t1:.0f} s)",
                        flush=True,
                    )
                runs.append(summary)
                raw_runs.append(raw)
        finally:
            if not args.keep_databases:
                realserver.drop_databases(cfg)
    text = table(runs, args)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "real_server": {"package": f"panda-server {args.version}", "schema": schema},
        "runs": runs,
        "raw": raw_runs,
        "table": text,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{args.name}.txt").write_text(text + "\n")
    print(text)
    return 0 if all(r[s]["errors"] == 0 for r in runs for s in ("real", "pandawms")) else 1


if __name__ == "__main__":
    sys.exit(main())
