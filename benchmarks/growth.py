"""Does dispatch and heartbeat latency stay flat as the tables grow?

Bulk-loads rows straight into the database (PostgreSQL: ``INSERT ... SELECT generate_series``
inside the server; SQLite: ``executemany``), then measures, through the core functions the
HTTP handlers call:

  dispatch    acquire_jobs (getJob, one job per call) at the busiest queue
  heartbeat   update_job "running" for a random running job
  get_status  get_statuses for a random PandaID (live or archived)

at each live-table size in --live (10k, 100k, 1M by default), then once more after filling the
archive to --archive rows. The live table looks like a busy PanDA instance: 1000 queues, the
measured queue holding 10 % of the rows; 35 % activated, 45 % running, the rest sent, starting,
holding, transferring and finished; five priority levels (jobs of a big task share one, so many
rows tie on currentPriority and dispatch must break ties by PandaID). On PostgreSQL it records
the EXPLAIN of the dispatch and heartbeat statements.

  python -m benchmarks.growth --db postgresql --live 10000,100000,1000000 --archive 10000000
  python -m benchmarks.growth --db sqlite --live 10000,100000,1000000 --archive 1000000

Bounded: --samples calls per measurement, and loading stops at --max-load-seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from benchmarks.pgdb import scratch_database
from pandawms.config import load_settings
from pandawms.core.jobs.dispatch import DispatchRequest, acquire_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.jobs.read import get_statuses
from pandawms.core.runtime import Runtime
from pandawms.db.versioning import init_schema
from pandawms.model.identity import Identity

SITE = "GROWTH_SITE"
N_SITES = 1000
STATES = [
    ("activated", 35),
    ("running", 45),
    ("sent", 4),
    ("starting", 4),
    ("holding", 5),
    ("transferring", 2),
    ("finished", 5),
]
_COLUMNS = (
    '"PandaID", "jobStatus", "computingSite", "prodSourceLabel", "currentPriority", "assignedPriority", '
    '"attemptNr", "maxAttempt", "jobName", "jediTaskID", "prodUserName", "creationTime", '
    '"modificationTime", "stateChangeTime", "transformation"'
)


def _state_sql(expr: str) -> str:
    """A CASE mapping ``expr`` (0..99) to a job state with the STATES weights."""
    parts, bound = [], 0
    for state, weight in STATES:
        bound += weight
        parts.append(f"WHEN {expr} < {bound} THEN '{state}'")
    return "CASE " + " ".join(parts) + " END"


def load_pg(engine: Engine, table: str, first: int, last: int, archive: bool) -> None:
    """Rows first..last into ``table``, generated inside PostgreSQL in chunks of 500k."""
    state = "'finished'" if archive else _state_sql("((g * 7919) % 100)")
    site = f"CASE WHEN g % 10 = 0 THEN '{SITE}' ELSE 'SITE_' || (g % {N_SITES}) END"
    for start in range(first, last + 1, 500_000):
        end = min(last, start + 499_999)
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {table} ({_COLUMNS}) SELECT g, {state}, {site}, 'managed', "  # noqa: S608 - constants only
                    f"500 + ((g * 104729) % 5) * 100, 1000, 0, 3, 'growth-' || g, g / 1000, 'user' || (g % 500), "
                    f"now() - interval '2 days', now() - ((g % 3600) || ' seconds')::interval, "
                    f"now() - interval '1 hour', 'trf' FROM generate_series({start}::bigint, {end}::bigint) AS g"
                )
            )


def _state_py(g: int) -> str:
    value, bound = (g * 7919) % 100, 0
    for state, weight in STATES:
        bound += weight
        if value < bound:
            return state
    return "finished"


def load_sqlite(engine: Engine, table: str, first: int, last: int, archive: bool) -> None:
    """Rows first..last into ``table`` by executemany, in chunks of 100k."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sql = f"INSERT INTO {table} ({_COLUMNS}) VALUES ({', '.join('?' * 15)})"  # noqa: S608 - constants only
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for start in range(first, last + 1, 100_000):
            end = min(last, start + 99_999)
            rows = [
                (
                    g,
                    "finished" if archive else _state_py(g),
                    SITE if g % 10 == 0 else f"SITE_{g % N_SITES}",
                    "managed",
                    500 + ((g * 104729) % 5) * 100,
                    1000,
                    0,
                    3,
                    f"growth-{g}",
                    g // 1000,
                    f"user{g % 500}",
                    now - dt.timedelta(days=2),
                    now - dt.timedelta(seconds=g % 3600),
                    now - dt.timedelta(hours=1),
                    "trf",
                )
                for g in range(start, end + 1)
            ]
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, rows)
            cur.execute("COMMIT")
    finally:
        raw.close()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def timed(samples: int, call: Callable[[int], object]) -> dict[str, float]:
    out = []
    for i in range(samples):
        started = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - started)
    return percentiles(out)


def explain(engine: Engine) -> dict[str, str]:
    """EXPLAIN ANALYZE of the dispatch select and of a running heartbeat (rolled back)."""
    dispatch = (
        f'SELECT "PandaID" FROM jobs WHERE "computingSite" = \'{SITE}\' AND "jobStatus" = \'activated\' '  # noqa: S608
        """AND "prodSourceLabel" IN ('managed', 'test', 'prod_test', 'rc_test', 'rc_alrb', 'ptest') """
        'ORDER BY "currentPriority" DESC, "PandaID" ASC LIMIT 1 FOR UPDATE SKIP LOCKED'
    )
    plans = {}
    with engine.connect() as conn:
        with conn.begin() as tx:
            plans["dispatch"] = "\n".join(
                r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + dispatch))
            )
            tx.rollback()
        pid = conn.execute(
            text('SELECT "PandaID" FROM jobs WHERE "jobStatus" = \'running\' LIMIT 1')
        ).scalar_one()
        conn.rollback()
        with conn.begin() as tx:
            plans["heartbeat"] = "\n".join(
                r[0]
                for r in conn.execute(
                    text(
                        'EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) UPDATE jobs SET "modificationTime" = now() '  # noqa: S608
                        f'WHERE "PandaID" = {int(pid)} AND "jobStatus" = \'running\' AND "attemptNr" = 0 '
                        'RETURNING "commandToPilot"'
                    )
                )
            )
            tx.rollback()
    return plans


def measure(rt: Runtime, samples: int, live: int, archived: int) -> dict[str, Any]:
    """Dispatch, heartbeat and status-read latencies at the current table sizes."""
    who = Identity(roles=frozenset({"pilot"}))
    rng = random.Random(live + archived)
    running = [
        g for g in (rng.randrange(1, live + 1) for _ in range(samples * 20)) if _state_py(g) == "running"
    ]
    got: list[int] = []

    def dispatch(i: int) -> None:
        jobs = acquire_jobs(rt, DispatchRequest(site=SITE, prod_source_label="managed", node=f"wn{i}"), who)
        got.extend(j["PandaID"] for j in jobs)

    def heartbeat(i: int) -> None:
        update_job(
            rt,
            PilotUpdate(
                panda_id=running[i % len(running)],
                state="running",
                attempt_nr=0,
                values={"cpuConsumptionTime": i},
            ),
        )

    total = live + archived

    def status(i: int) -> None:
        get_statuses(rt, [rng.randrange(1, total + 1)])

    result = {
        "live_rows": live,
        "archive_rows": archived,
        "dispatch": timed(samples, dispatch),
        "heartbeat": timed(samples, heartbeat),
        "get_status": timed(samples, status),
    }
    result["dispatched"] = len(got)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--live", default="10000,100000,1000000", help="live-table sizes to measure at")
    parser.add_argument("--archive", type=int, default=10_000_000, help="archive rows for the last step")
    parser.add_argument("--samples", type=int, default=500, help="calls per measurement")
    parser.add_argument(
        "--max-load-seconds", type=float, default=900, help="stop loading the archive after this"
    )
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.live.split(","))
    tmp = tempfile.TemporaryDirectory(prefix="pandawms-growth-")
    scratch = contextlib.ExitStack()
    if args.db == "postgresql":
        url = scratch.enter_context(scratch_database(args.admin_url, "pandawms_bench_growth"))
        loader = load_pg
    else:
        url = f"sqlite:///{Path(tmp.name) / 'growth.sqlite'}"
        loader = load_sqlite
    rt = Runtime.from_settings(load_settings(None, {"db_url": url, "data_dir": tmp.name, "db_pool_size": 2}))
    results: list[dict[str, Any]] = []
    plans: dict[str, Any] = {}
    try:
        init_schema(rt.engine)
        loaded = 0
        for size in sizes:
            started = time.monotonic()
            loader(rt.engine, "jobs", loaded + 1, size, archive=False)
            _analyze(rt.engine, args.db)
            load_s = time.monotonic() - started
            loaded = size
            step = measure(rt, args.samples, size, 0)
            step["load_s"] = round(load_s, 1)
            results.append(step)
            print(json.dumps(step), flush=True)
            if args.db == "postgresql":
                plans[f"live={size}"] = explain(rt.engine)
        if args.archive:
            started = time.monotonic()
            archived, chunk = 0, 1_000_000
            while archived < args.archive and time.monotonic() - started < args.max_load_seconds:
                upto = min(args.archive, archived + chunk)
                loader(rt.engine, "jobs_archive", loaded + 1 + archived, loaded + upto, archive=True)
                archived = upto
            _analyze(rt.engine, args.db)
            step = measure(rt, args.samples, loaded, archived)
            step["load_s"] = round(time.monotonic() - started, 1)
            results.append(step)
            print(json.dumps(step), flush=True)
            if args.db == "postgresql":
                plans[f"live={loaded},archive={archived}"] = explain(rt.engine)
    finally:
        rt.engine.dispose()
        scratch.close()
        tmp.cleanup()
    print(table(results))
    for label, plan in plans.items():
        print(f"\n-- EXPLAIN at {label}\n{plan['dispatch']}\n{plan['heartbeat']}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"db": args.db, "steps": results, "plans": plans}, indent=1)
        )
    return 0


def _analyze(engine: Engine, db: str) -> None:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'live':>9} {'archive':>10} | {'dispatch p50/p99 ms':>20} | {'heartbeat p50/p99':>18} | {'get_status p50/p99':>19}"
    ]
    for r in results:
        lines.append(
            f"{r['live_rows']:>9} {r['archive_rows']:>10} | "
            f"{r['dispatch']['p50_ms']:>9} / {r['dispatch']['p99_ms']:<8} | "
            f"{r['heartbeat']['p50_ms']:>8} / {r['heartbeat']['p99_ms']:<7} | "
            f"{r['get_status']['p50_ms']:>8} / {r['get_status']['p99_ms']:<8}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
