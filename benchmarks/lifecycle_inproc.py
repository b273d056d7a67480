"""The job lifecycle in one process, without HTTP: statements by kind and CPU per job.

The load harness (``pandabench``) measures the whole server through its wire formats, on a
machine it shares with its own load generator and the database; its rates move by 20 % from
run to run. This drives the core calls the pilot handlers make (submit, ``acquire_jobs_async``,
``update_job_grouped`` for ``starting``, ``running``, ``finished``) from ``--pilots`` concurrent
asyncio tasks, through the same group commit, on a fresh database, and counts what is steadier:
every SQL statement sent, by kind, and the process's CPU time, per job. ``--profile`` adds a
cProfile of the lifecycle phase (functions by own time).

    .venv/bin/python -m benchmarks.lifecycle_inproc --db postgresql --jobs 4000 --pilots 100
    .venv/bin/python -m benchmarks.lifecycle_inproc --db sqlite --jobs 4000 --pilots 100 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import re
import tempfile
import time
from collections import Counter
from typing import Any

from sqlalchemy import event, text

from benchmarks.pgdb import scratch_database
from pandawms.config import load_settings
from pandawms.core.jobs import dispatch, heartbeat, submit
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.runtime import Runtime
from pandawms.db.versioning import init_schema
from pandawms.model.identity import Identity

SUBMITTER = Identity(dn="/DC=org/CN=Bench Submitter", method="x509")
PILOT = Identity(dn="/DC=org/CN=Bench Pilot", method="x509")
SITE = "INPROC_SITE"


def _job(index: int) -> dict[str, Any]:
    return {
        "jobDefinitionID": 1,
        "jobName": f"inproc-{index}",
        "transformation": "http://example.org/trf/hello.sh",
        "prodSourceLabel": "managed",
        "assignedPriority": index % 1000,
        "currentPriority": index % 1000,
        "computingSite": SITE,
        "jobParameters": "--events 100",
        "VO": "atlas",
        "Files": [
            {
                "lfn": f"inproc-{index}.log.tgz",
                "type": "log",
                "dataset": "bench.log",
                "destinationDBlock": "bench.log",
            }
        ],
    }


def _kind(sql: str) -> str:
    """'UPDATE jobs', 'SELECT jobs', 'INSERT job_status_log', ... (the leading WITH skipped)."""
    head = " ".join(sql.split())[:4000]
    verb = head.split(" ", 1)[0].upper()
    if verb == "WITH":
        return "WITH " + head.split("(", 1)[1].split(" ", 1)[0].upper() + " ..."
    match = re.search(r"(?:FROM|INTO|UPDATE)\s+\"?(\w+)\"?", head, re.I)
    return f"{verb} {match.group(1) if match else ''}".strip()


async def _pilot(rt: Runtime, index: int, done: list[int], stop: asyncio.Event) -> None:
    caller = None
    while not stop.is_set():
        req = dispatch.DispatchRequest(site=SITE, n_jobs=1, prod_source_label="managed", node=f"wn{index}")
        found = await dispatch.acquire_jobs_async(rt, req, PILOT)
        if not found:
            return
        job = found[0]
        pid = int(job["PandaID"])
        for state in ("starting", "running", "finished"):
            values = {"modificationHost": f"wn{index}", "cpuConsumptionTime": 10}
            if state == "running":
                values["maxRSS"] = 100000
            report = None
            if state == "finished":
                report = json.dumps(
                    {f"inproc-{_index_of(job)}.log.tgz": {"guid": "g", "fsize": 100, "adler32": "01020304"}}
                )
            upd = PilotUpdate(pid, state, 0, values, report=report, caller=caller)
            result = await heartbeat.update_job_grouped(rt, upd)
            assert result.status_code == 0, result
        done.append(pid)


def _index_of(job: dict[str, Any]) -> str:
    return str(job["jobName"]).rsplit("-", 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-name", default="pandawms_inproc")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--pilots", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="cProfile the lifecycle phase")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="inproc-") as tmp, contextlib.ExitStack() as stack:
        if args.db == "postgresql":
            url = stack.enter_context(scratch_database(args.admin_url, args.db_name))
        else:
            url = f"sqlite:///{tmp}/inproc.sqlite"
        result = _run(args, url, tmp)
    print(json.dumps(result, indent=1))
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(result, out, indent=1)
    return 0


def _run(args: argparse.Namespace, url: str, tmp: str) -> dict[str, Any]:
    settings = load_settings(None, {"db_url": url, "data_dir": tmp})
    rt = Runtime.from_settings(settings)
    init_schema(rt.engine)
    submit_kinds: Counter[str] = Counter()

    def count_submit(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        submit_kinds[_kind(statement)] += 1

    event.listen(rt.engine, "before_cursor_execute", count_submit)
    submit_cpu = 0.0
    submit_profiler = cProfile.Profile() if args.profile else None
    for start in range(0, args.jobs, 500):
        made = [_job(i) for i in range(start, min(args.jobs, start + 500))]
        cpu_before = time.process_time()
        if submit_profiler:
            submit_profiler.enable()
        submit.submit_jobs(rt, made, SUBMITTER)
        if submit_profiler:
            submit_profiler.disable()
        submit_cpu += time.process_time() - cpu_before
    event.remove(rt.engine, "before_cursor_execute", count_submit)
    if args.db == "postgresql":
        with rt.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE jobs"))
    kinds: Counter[str] = Counter()
    commits = Counter[str]()

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        kinds[_kind(statement)] += 1

    event.listen(rt.engine, "before_cursor_execute", count)
    event.listen(rt.engine, "commit", lambda _conn: commits.update(["COMMIT"]))
    profiler = cProfile.Profile() if args.profile else None
    done: list[int] = []

    async def lifecycle() -> None:
        stop = asyncio.Event()
        await asyncio.gather(*(_pilot(rt, i, done, stop) for i in range(args.pilots)))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    asyncio.run(lifecycle())
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    rt.engine.dispose()
    n = len(done)
    result: dict[str, Any] = {
        "db": args.db,
        "jobs_completed": n,
        "pilots": args.pilots,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(n / wall, 1),
        "cpu_ms_per_job": round(cpu / n * 1000, 3),
        "statements_per_job": round(sum(kinds.values()) / n, 2),
        "commits_per_job": round(commits["COMMIT"] / n, 3),
        "statements_by_kind_per_job": {k: round(v / n, 3) for k, v in kinds.most_common()},
        "submit": {
            "cpu_ms_per_job": round(submit_cpu / args.jobs * 1000, 3),
            "statements_per_job": round(sum(submit_kinds.values()) / args.jobs, 3),
        },
    }
    if submit_profiler:
        result["submit"]["profile_own_time_ms_per_job"] = _top(submit_profiler, args.top, args.jobs)
    if profiler:
        result["profile_own_time_ms_per_job"] = _top(profiler, args.top, n)
    return result


def _top(profiler: cProfile.Profile, top: int, n: int) -> list[tuple[str, float]]:
    """The ``top`` functions by own time, in ms per job."""
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    return [
        (f"{fn[2]} ({fn[0].rsplit('/', 1)[-1]}:{fn[1]})", round(tt / n * 1000, 4))
        for fn, (_cc, _nc, tt, _ct, _callers) in rows
    ]


if __name__ == "__main__":
    raise SystemExit(main())
