"""How fast the monitor pages load with a large database (not part of the test suite).

Two steps, so that the slow fill is done once:

  python -m benchmarks.monitor_pages fill --db-url sqlite:////tmp/mon.sqlite --jobs 1000000
  python -m benchmarks.monitor_pages measure --db-url sqlite:////tmp/mon.sqlite --repeat 20

``fill`` writes jobs straight into the tables (the API would take an hour for a million) with
realistic spreads: 20 queues, 2000 tasks, 50 users, every status, about four status-log rows
and one file per job, modification times over the last day. ``--archived`` puts that many of
the final jobs in ``jobs_archive`` instead of the live table; the default keeps all of them
live, the worst case for the live-table summaries.

``measure`` starts the real ``pandawms serve`` on a loopback port with that database and loads
each page: the first load (cold caches) and then ``--repeat`` loads, reporting min, median, p95
and max in milliseconds, as a table and as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.db.engine import make_engine
from pandawms.db.schema import files, job_status_log, jobs, jobs_archive
from pandawms.db.versioning import init_schema

QUEUES = [f"BENCH_Q{i:02d}" for i in range(20)]
USERS = [f"user{i:02d}" for i in range(50)]
#: (status, weight) of the jobs written.
STATUS_MIX = [
    ("finished", 45),
    ("failed", 10),
    ("cancelled", 2),
    ("closed", 1),
    ("running", 15),
    ("activated", 14),
    ("defined", 2),
    ("sent", 2),
    ("starting", 3),
    ("holding", 3),
    ("transferring", 3),
]
_PATHS = {
    "activated": ["defined", "activated"],
    "defined": ["defined"],
    "sent": ["defined", "activated", "sent"],
    "starting": ["defined", "activated", "sent", "starting"],
    "running": ["defined", "activated", "sent", "starting", "running"],
    "holding": ["defined", "activated", "sent", "running", "holding"],
    "transferring": ["defined", "activated", "sent", "running", "transferring"],
    "finished": ["defined", "activated", "sent", "running", "finished"],
    "failed": ["defined", "activated", "sent", "running", "failed"],
    "cancelled": ["defined", "activated", "cancelled"],
    "closed": ["defined", "activated", "closed"],
}
_PILOT_ERRORS = [
    (1305, "payload failed"),
    (1212, "out of memory"),
    (1099, "stage-in failed"),
    (1144, "killed"),
]


def _queue_file() -> str:
    return json.dumps(
        {
            name: {"status": "online" if i < 18 else "offline", "type": "unified", "corecount": 1}
            for i, name in enumerate(QUEUES)
        }
    )


def fill(db_url: str, n_jobs: int, archived: int, seed: int) -> None:
    """Write ``n_jobs`` jobs (``archived`` of the final ones into jobs_archive)."""
    rng = random.Random(seed)
    engine = make_engine(db_url, pool_size=2, max_overflow=0)
    print(init_schema(engine), flush=True)
    from pandawms.config import load_settings

    rt = Runtime(engine=engine, settings=load_settings(None, {"db_url": db_url}))
    print(load_queues(rt, _queue_file()), flush=True)
    statuses = [s for s, w in STATUS_MIX for _ in range(w)]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    started = time.monotonic()
    chunk = 20000
    log_id = 0
    archived_left = archived
    for base in range(0, n_jobs, chunk):
        live_rows, archive_rows, log_rows, file_rows = [], [], [], []
        for panda_id in range(base + 1, min(base + chunk, n_jobs) + 1):
            status = rng.choice(statuses)
            # Later PandaIDs are newer, as in a real server.
            created = now - dt.timedelta(seconds=(n_jobs - panda_id) * 86400 / n_jobs + rng.random() * 60)
            path = _PATHS[status]
            times = [created + dt.timedelta(seconds=30 * k + rng.random() * 20) for k in range(len(path))]
            modified = min(times[-1], now)
            site = None if status == "defined" and rng.random() < 0.5 else rng.choice(QUEUES)
            task = 1000 + (panda_id * 2000) // max(n_jobs, 1)
            row: dict[str, Any] = {
                "PandaID": panda_id,
                "jobDefinitionID": task,
                "jobName": f"bench.{task}.{panda_id}",
                "jobStatus": status,
                "computingSite": site,
                "prodSourceLabel": "managed" if panda_id % 3 else "user",
                "prodUserName": USERS[task % len(USERS)],
                "jediTaskID": task,
                "creationTime": created,
                "modificationTime": modified,
                "stateChangeTime": modified,
                "startTime": times[2] if len(times) > 2 else None,
                "endTime": modified if status in ("finished", "failed", "cancelled", "closed") else None,
                "currentPriority": rng.randint(900, 1100),
                "assignedPriority": 1000,
                "attemptNr": 1,
                "coreCount": 1,
                "transformation": "http://example.org/trf/run.sh",
                "VO": "atlas",
                "pilotErrorCode": 0,
                "pilotErrorDiag": None,
                "brokerageErrorCode": 0,
                "brokerageErrorDiag": None,
            }
            if status == "failed":
                code, diag = rng.choice(_PILOT_ERRORS)
                row["pilotErrorCode"], row["pilotErrorDiag"] = code, diag
            if status == "defined" and site is None:
                row["brokerageErrorCode"], row["brokerageErrorDiag"] = 100, "no queue fits: 18 too few cores"
            final = status in ("finished", "failed", "cancelled", "closed")
            if final and archived_left > 0:
                archived_left -= 1
                archive_rows.append(row)
            else:
                live_rows.append(row)
            old = None
            for new, when in zip(path, times, strict=True):
                log_id += 1
                log_rows.append(
                    {
                        "id": log_id,
                        "PandaID": panda_id,
                        "modificationTime": min(when, now),
                        "jobStatus": new,
                        "oldStatus": old,
                        "prodSourceLabel": row["prodSourceLabel"],
                        "computingSite": site,
                        "attemptNr": 1,
                    }
                )
                old = new
            file_rows.append(
                {
                    "PandaID": panda_id,
                    "lfn": f"bench.{panda_id}.log.tgz",
                    "type": "log",
                    "dataset": f"bench.{task}.log",
                    "status": "ready" if final else "unknown",
                    "jediTaskID": task,
                }
            )
        # The status log is ordered by time, as a live server writes it.
        log_rows.sort(key=lambda r: r["modificationTime"])
        with engine.begin() as conn:
            if live_rows:
                conn.execute(jobs.insert(), live_rows)
            if archive_rows:
                conn.execute(jobs_archive.insert(), archive_rows)
            conn.execute(
                job_status_log.insert(), [{k: v for k, v in r.items() if k != "id"} for r in log_rows]
            )
            conn.execute(files.insert(), file_rows)
        done = min(base + chunk, n_jobs)
        rate = done / max(time.monotonic() - started, 1e-6)
        print(f"\r{done} jobs written ({rate:.0f}/s)", end="", flush=True)
    print()
    if engine.dialect.name in ("sqlite", "postgresql"):
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    # Leave the monitor's summary tables as the monitor_rollup daemon task keeps them on a live
    # server (it runs every 30 s), so that "cold" below means a fresh httpd worker, not a
    # database nobody has looked after.
    from pandawms.monitor.rollup import roll_up

    rt = Runtime.from_settings(load_settings(None, {"db_url": db_url}))
    started = time.monotonic()
    while True:
        message = roll_up(rt)
        if "backlog" not in message:
            break
    print(f"monitor rollup: {message} ({time.monotonic() - started:.1f} s)")
    rt.engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sample_ids(client: httpx.Client, base: str) -> dict[str, str]:
    """A failed job, a task and a queue that exist, found through the monitor's own JSON."""
    data = client.get(base + "/monitor/api/jobs", params={"status": "failed", "limit": 1}).json()
    job = data["jobs"][0]
    return {"job": str(job["PandaID"]), "task": str(job["jediTaskID"]), "queue": str(job["computingSite"])}


def measure(db_url: str, repeat: int, json_out: str | None) -> dict[str, dict[str, float]]:
    """Start ``pandawms serve`` on ``db_url`` and time every page."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tempfile.mkdtemp(prefix="monbench-")
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pandawms",
            "serve",
            "--port",
            str(port),
            "--db-url",
            db_url,
            "--data-dir",
            data_dir,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PANDA_LOG_LEVEL": "WARNING"},
    )
    results: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(timeout=120) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get(base + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start: " + (Path(data_dir) / "server.log").read_text())
                time.sleep(0.2)
            # Cold loads first, in the order a shifter would click.
            pages: list[tuple[str, str]] = [
                ("dashboard", "/monitor"),
                ("dashboard 24h", "/monitor?hours=24"),
                ("jobs", "/monitor/jobs"),
            ]
            cold: dict[str, float] = {}
            for name, path in pages:
                t0 = time.perf_counter()
                r = client.get(base + path)
                cold[name] = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
            ids = _sample_ids(client, base)
            pages += [
                ("jobs status=running", "/monitor/jobs?status=running"),
                ("jobs status=failed queue", f"/monitor/jobs?status=failed&queue={ids['queue']}"),
                ("jobs rare status=closed", "/monitor/jobs?status=closed"),
                ("jobs task", f"/monitor/jobs?task={ids['task']}"),
                ("jobs user", "/monitor/jobs?user=user07"),
                ("jobs last 1h", "/monitor/jobs?hours=1"),
                ("jobs status+1h", "/monitor/jobs?status=finished&hours=1"),
                ("jobs page 50", "/monitor/jobs?before=500000"),
                ("jobs archive+live", "/monitor/jobs?table=all&status=failed"),
                ("job", f"/monitor/job/{ids['job']}"),
                ("task", f"/monitor/task/{ids['task']}"),
                ("queues", "/monitor/queues"),
                ("queue", f"/monitor/queue/{ids['queue']}"),
                ("daemon", "/monitor/daemon"),
                ("metrics", "/metrics"),
                ("json dashboard", "/monitor/api/dashboard"),
                ("json jobs", "/monitor/api/jobs?status=running"),
            ]
            for name, path in pages[3:]:
                t0 = time.perf_counter()
                r = client.get(base + path)
                cold[name] = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
            for name, path in pages:
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    client.get(base + path).raise_for_status()
                    times.append((time.perf_counter() - t0) * 1000)
                times.sort()
                results[name] = {
                    "cold_ms": round(cold[name], 1),
                    "min_ms": round(times[0], 1),
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
                    "max_ms": round(times[-1], 1),
                }
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    print(f"{'PAGE':<26} {'COLD':>8} {'MIN':>8} {'MEDIAN':>8} {'P95':>8} {'MAX':>8}   (ms)")
    for name, row in results.items():
        print(
            f"{name:<26} {row['cold_ms']:>8} {row['min_ms']:>8} {row['median_ms']:>8} {row['p95_ms']:>8} "
            f"{row['max_ms']:>8}"
        )
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="monitor_pages", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p_fill = sub.add_parser("fill", help="write a large database")
    p_fill.add_argument("--db-url", required=True)
    p_fill.add_argument("--jobs", type=int, default=1_000_000)
    p_fill.add_argument("--archived", type=int, default=0, help="final jobs to put in jobs_archive")
    p_fill.add_argument("--seed", type=int, default=1)
    p_measure = sub.add_parser("measure", help="time the pages on a filled database")
    p_measure.add_argument("--db-url", required=True)
    p_measure.add_argument("--repeat", type=int, default=20)
    p_measure.add_argument("--json-out")
    args = parser.parse_args(argv)
    if args.step == "fill":
        fill(args.db_url, args.jobs, args.archived, args.seed)
    else:
        measure(args.db_url, args.repeat, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
