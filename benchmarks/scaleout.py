"""Scale-out run: three httpd nodes and two daemons behind HAProxy, one node SIGKILLed mid-run.

Pilots (the lean asyncio client, pilot wire format) talk only to the balancer: getJob, then
``starting``, ``running`` x N and ``finished`` for each job, repeating a call that got no
answer, a 502/503 or a transport error, as a pilot does. At ``--kill-at`` of the jobs dispatched
one node's process group is SIGKILLed. The run ends when the database has no live job left at
the site (the watcher fails jobs whose dispatch reply died with the node, and their retries are
dispatched to the surviving nodes), or at ``--duration``.

Then it checks, from the database:
  * no PandaID reached two pilots, and no job has two ``sent`` rows in its status log;
  * every submitted job ends ``finished``, itself or through its retries (none lost);
  * every acknowledged update is there: ``finished`` ones are finished, ``running`` ones are in
    the status log.

  python -m benchmarks.scaleout --jobs 3000 --pilots 60 --json-out /tmp/scaleout.json

It creates (and drops at the end) its own PostgreSQL database through --admin-url.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text, union_all
from sqlalchemy.engine import make_url

from benchmarks.cluster import Cluster, haproxy_binary
from benchmarks.httpclient import Connection, form
from pandawms.db.schema import job_status_log, jobs, jobs_archive
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ATTRIBUTE_NAMES

SITE = "SCALE_SITE"
LIVE = ("defined", "assigned", "activated", "sent", "starting", "running", "holding", "transferring")
#: Server settings of every node and daemon: a fast watcher so lost dispatches come back soon.
CLUSTER_ENV = {
    "PANDA_TIMEOUT_SENT": "10",
    "PANDA_DAEMON_TASKS": "watcher,archiver",
    "PANDA_DAEMON_PERIODS": "watcher=2,archiver=5",
    "PANDA_ARCHIVE_DELAY": "0",
    "PANDA_DB_POOL_SIZE": "5",
    "PANDA_DB_MAX_OVERFLOW": "0",
}


def job_list(index: int) -> list[Any]:
    """One managed job (three attempts allowed, one log file) as panda-client's positional list."""
    values: dict[str, Any] = {
        "jobDefinitionID": 1,
        "jobName": f"scale-{index}",
        "transformation": "http://example.org/trf/hello.sh",
        "prodSourceLabel": "managed",
        "assignedPriority": 1000,
        "currentPriority": 1000,
        "maxAttempt": 3,
        "computingSite": SITE,
        "jobParameters": "--events 10",
    }
    log = {
        "lfn": f"scale-{index}.log.tgz",
        "type": "log",
        "dataset": "scale.log",
        "destinationDBlock": "scale.log",
    }
    job = [values.get(name, "NULL") for name in JOB_ATTRIBUTE_NAMES]
    return [*job, [[log.get(name, "NULL") for name in FILE_ATTRIBUTE_NAMES] + [None]]]


@dataclass
class Record:
    """What the clients saw: acknowledged results, latencies and failures."""

    submitted: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)
    acked: list[tuple[int, str]] = field(default_factory=list)
    tobekilled: list[tuple[int, str, float, Any]] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    dispatched_before_kill: int | None = None

    def time(self, method: str, seconds: float) -> None:
        self.latencies.setdefault(method, []).append(seconds)


async def call(
    rec: Record, conn: Connection, method: str, path: str, body: bytes, ctype: str, deadline: float
) -> dict[str, Any] | None:
    """One request, repeated until it gets an HTTP 200 (as a pilot would) or the deadline passes."""
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            status, data = await conn.request("POST", path, body, ctype)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            rec.failures[f"{method}: transport"] += 1
            await conn.close()
            await asyncio.sleep(0.2)
            continue
        rec.time(method, time.perf_counter() - started)
        if status == 200:
            reply: dict[str, Any] = json.loads(data)
            return reply
        rec.failures[f"{method}: HTTP {status}"] += 1
        await asyncio.sleep(0.2)
    return None


async def submit(url: tuple[str, int], rec: Record, n_jobs: int, batch: int, deadline: float) -> None:
    conn = Connection(*url)
    for start in range(0, n_jobs, batch):
        body = json.dumps(
            {"jobs": json.dumps([job_list(i) for i in range(start, min(n_jobs, start + batch))])}
        )
        reply = await call(
            rec, conn, "v1 job/submit", "/api/v1/job/submit", body.encode(), "application/json", deadline
        )
        if reply is None or not reply.get("success"):
            raise RuntimeError(f"submission failed: {reply}")
        rec.submitted.extend(int(item[0]) for item in reply["data"])
    await conn.close()


async def pilot(
    url: tuple[str, int], rec: Record, index: int, heartbeats: int, stop: asyncio.Event, deadline: float
) -> None:
    conn = Connection(*url)
    ask = form({"siteName": SITE, "prodSourceLabel": "managed", "node": f"wn{index}", "mem": 2000})
    ctype = "application/x-www-form-urlencoded"
    while not stop.is_set() and time.monotonic() < deadline:
        got = await call(rec, conn, "getJob", "/server/panda/getJob", ask, ctype, deadline)
        if got is None:
            break
        if got.get("StatusCode") != 0:
            await asyncio.sleep(0.3)
            continue
        panda_id = int(got["PandaID"])
        rec.dispatched.append(panda_id)
        got_at = time.monotonic()
        for state in ["starting", *["running"] * heartbeats, "finished"]:
            fields: dict[str, Any] = {"jobId": panda_id, "state": state, "attemptNr": got["attemptNr"]}
            if state == "finished":
                fields["xml"] = json.dumps({got["logFile"]: {"guid": "g", "fsize": 1, "adler32": "01020304"}})
                fields["transExitCode"] = 0
            reply = await call(
                rec, conn, f"updateJob {state}", "/server/panda/updateJob", form(fields), ctype, deadline
            )
            if reply is None:
                break
            if reply.get("StatusCode") == 0 and reply.get("command") == "tobekilled":
                # The watcher gave the job up meanwhile (its pilot was silent too long).
                rec.tobekilled.append(
                    (panda_id, state, round(time.monotonic() - got_at, 2), got["attemptNr"])
                )
                break
            if reply.get("StatusCode") == 0:
                rec.acked.append((panda_id, state))
    await conn.close()


async def watch_until_done(db_url: str, stop: asyncio.Event, deadline: float, submitted: int) -> None:
    """Stop the pilots once the database has no live job left at the site."""
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            with engine.connect() as conn:
                live = conn.execute(
                    select(jobs.c.PandaID)
                    .where(jobs.c.computingSite == SITE, jobs.c.jobStatus.in_(LIVE))
                    .limit(1)
                ).first()
            if live is None and submitted:
                break
    finally:
        engine.dispose()
        stop.set()


def verify(db_url: str, rec: Record) -> dict[str, Any]:
    """Every check listed in the module docstring; returns counts and the list of problems."""
    engine = create_engine(db_url)
    cols = ("PandaID", "jobStatus", "parentID", "jobDispatcherErrorCode", "attemptNr")
    both = union_all(
        select(*[jobs.c[c] for c in cols]).where(jobs.c.computingSite == SITE),
        select(*[jobs_archive.c[c] for c in cols]).where(jobs_archive.c.computingSite == SITE),
    )
    with engine.connect() as conn:
        rows = {r.PandaID: r for r in conn.execute(both)}
        sent_rows = Counter(
            r[0]
            for r in conn.execute(
                select(job_status_log.c.PandaID).where(job_status_log.c.jobStatus == "sent")
            )
        )
        ran = {
            r[0]
            for r in conn.execute(
                select(job_status_log.c.PandaID).where(job_status_log.c.jobStatus == "running")
            )
        }
    engine.dispose()
    child = {r.parentID: pid for pid, r in rows.items() if r.parentID}
    problems: list[str] = []
    twice = [pid for pid, n in Counter(rec.dispatched).items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} PandaIDs reached two pilots: {twice[:5]}")
    sent_twice = [pid for pid, n in sent_rows.items() if n > 1 and pid in rows]
    if sent_twice:
        problems.append(f"{len(sent_twice)} jobs were set to sent twice: {sent_twice[:5]}")
    lost, recovered = [], 0
    for pid in rec.submitted:
        current, hops = pid, 0
        while current in child and hops < 5:
            current, hops = child[current], hops + 1
        if rows.get(current) is None or rows[current].jobStatus != "finished":
            lost.append((pid, current, rows[current].jobStatus if current in rows else None))
        recovered += hops
    if lost:
        problems.append(f"{len(lost)} submitted jobs did not end finished: {lost[:5]}")
    unfinished = [
        pid for pid, state in rec.acked if state == "finished" and rows[pid].jobStatus != "finished"
    ]
    if unfinished:
        problems.append(
            f"{len(unfinished)} acknowledged 'finished' updates are not in the database: {unfinished[:5]}"
        )
    no_run = [pid for pid, state in rec.acked if state == "running" and pid not in ran]
    if no_run:
        problems.append(f"{len(no_run)} acknowledged 'running' updates left no trace: {no_run[:5]}")
    send_errors = sum(1 for r in rows.values() if r.jobDispatcherErrorCode == 102)
    return {
        "submitted": len(rec.submitted),
        "dispatched_acked": len(rec.dispatched),
        "updates_acked": len(rec.acked),
        "jobs_in_db": len(rows),
        "finished_in_db": sum(1 for r in rows.values() if r.jobStatus == "finished"),
        "lost_dispatch_replies_recovered_by_watcher": send_errors,
        "retries_followed": recovered,
        "pilot_told_tobekilled": rec.tobekilled[:20],
        "problems": problems,
    }


def balancer_summary(log: Path) -> dict[str, Any]:
    """From HAProxy's request log: requests per node, 5xx answers and redispatched requests."""
    per_node: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    redispatched = 0
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        at = next((i for i, part in enumerate(parts) if "/node" in part and "[" not in part), None)
        if at is None or len(parts) < at + 8 or '"GET /health' in line:
            continue
        per_node[parts[at].split("/", 1)[1]] += 1
        if parts[at + 2].startswith("5"):
            codes[parts[at + 2]] += 1
        if "/+" in parts[at + 7]:  # actconn/feconn/beconn/srv_conn/+retries: re-sent elsewhere
            redispatched += 1
    return {"requests_per_node": dict(per_node), "5xx": dict(codes), "redispatched": redispatched}


async def drive(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Submit, run the pilots, kill a node at --kill-at, wait for the end; return the figures."""
    rec = Record()
    address = ("127.0.0.1", cluster.port)
    deadline = time.monotonic() + args.duration
    t0 = time.monotonic()
    await submit(address, rec, args.jobs, args.batch, deadline)
    t_submit = time.monotonic() - t0
    stop = asyncio.Event()
    t1 = time.monotonic()
    pilots = [
        asyncio.create_task(pilot(address, rec, i, args.heartbeats, stop, deadline))
        for i in range(args.pilots)
    ]
    killed_at: float | None = None
    if args.kill_at > 0:
        while time.monotonic() < deadline and len(rec.dispatched) < args.kill_at * args.jobs:
            await asyncio.sleep(0.05)
        # Counted when node 1 stops answering (the freeze, or the kill itself): what the other
        # nodes hand out from then on is work they picked up.
        rec.dispatched_before_kill = len(rec.dispatched)
        await asyncio.to_thread(cluster.kill_node, 0, args.freeze)
        killed_at = time.monotonic() - t1
    await watch_until_done(cluster.db_url, stop, deadline, args.jobs)
    await asyncio.gather(*pilots)
    elapsed = time.monotonic() - t1
    methods = {}
    for method, values in sorted(rec.latencies.items()):
        ordered = sorted(values)
        methods[method] = {
            "count": len(values),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
        }
    result = verify(cluster.db_url, rec)
    result.update(
        {
            "nodes": cluster.n_nodes,
            "daemons": cluster.n_daemons,
            "pilots": args.pilots,
            "submit_s": round(t_submit, 2),
            "run_s": round(elapsed, 2),
            "node_killed_at_s": round(killed_at, 2) if killed_at is not None else None,
            "node_frozen_before_kill_s": args.freeze,
            "jobs_done_per_s": round(result["finished_in_db"] / elapsed, 1) if elapsed else 0.0,
            "client_failures": dict(rec.failures),
            "dispatched_after_kill": (
                len(rec.dispatched) - rec.dispatched_before_kill
                if rec.dispatched_before_kill is not None
                else None
            ),
            "balancer": balancer_summary(cluster.work / "haproxy.log"),
            "balancer_events": [
                line.split(": ", 1)[-1][:160]
                for line in (cluster.work / "haproxy.log").read_text(errors="replace").splitlines()
                if " is DOWN" in line or " is UP" in line
            ][-10:],
            "methods": methods,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pilots", type=int, default=60)
    parser.add_argument("--heartbeats", type=int, default=1, help="running heartbeats per job")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--daemons", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="httpd workers per node")
    parser.add_argument(
        "--kill-at", type=float, default=0.4, help="fraction dispatched when node 1 dies (0: never)"
    )
    parser.add_argument(
        "--freeze", type=float, default=0.0, help="seconds node 1 hangs (SIGSTOP) before its SIGKILL"
    )
    parser.add_argument("--duration", type=float, default=240, help="hard limit, seconds")
    parser.add_argument("--json-out")
    parser.add_argument("--keep", help="keep the nodes' logs, the balancer's config and the database")
    args = parser.parse_args(argv)
    if haproxy_binary() is None:
        print("haproxy is not installed", file=sys.stderr)
        return 2
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = "pandawms_bench_scaleout"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    db_url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="pandawms-scaleout-") as tmp:
            work = args.keep or tmp
            cluster = Cluster(
                db_url, Path(work), args.nodes, args.daemons, args.workers, env=dict(CLUSTER_ENV)
            )
            with cluster:
                result = asyncio.run(drive(cluster, args))
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    print(json.dumps(result, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
