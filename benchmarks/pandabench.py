"""Load generator for pandawms: submitters, pilots and readers over the real wire formats.

Scenarios (all bounded in count and time, loopback only):
  dispatch   submit --jobs jobs, then --pilots pilots call getJob until the queue is empty
  heartbeat  submit and dispatch --jobs jobs, then pilots send updateJob running heartbeats
  lifecycle  submitters and pilots together: submit, getJob, starting, running, finished
  read       readers call job/get_description on known PandaIDs
  soak       lifecycle for --duration seconds with submitters topping the queue up; RSS series
  harvester  lifecycle as Harvester drives it: --pilots clients each take 10-100 jobs per v1
             pilot/acquire_jobs and report starting, running, finished with pilot/update_jobs_bulk

--api v1 makes the pilots of dispatch, heartbeat, lifecycle and soak speak the v1 calls as pilot
3.11 sends them (pilot/acquire_jobs, pilot/update_job: JSON bodies, gzip, Content-Encoding:
gzip) instead of the legacy getJob and updateJob.

Reports per method: count, errors (transport, HTTP != 200, StatusCode other than 0/20, v1
success false, a v1 answer whose data carries a StatusCode other than 0/20 or the command
``tobekilled``), throughput, p50/p95/p99 latency; jobs dispatched/s and PandaIDs handed out
twice; server RSS (sampled every second from --server-pid and its children); the load average
before and after (the machine may be shared); for lifecycle and soak the time 1.5M jobs would
take at the measured rate. Prints a table and writes --json-out. Connections opened: the server's own count of new database
connections (``pandawms_db_connections_opened_total`` in /metrics, every pool's ``connect``
events, exact, on every backend) at the start and end of the measuring window; on PostgreSQL
also the growth of ``pg_stat_database.sessions`` of the started server's database (the harness
itself opens no session there in that window).

Against a running server:

  python -m benchmarks.pandabench --url http://127.0.0.1:25080 --scenario dispatch --jobs 20000 --pilots 200

Or let it start ``pandawms httpd`` on a fresh database (SQLite file, or a PostgreSQL database
``pandawms_bench``, or --bench-db, made through --admin-url) and stop it at the end:

  python -m benchmarks.pandabench --start-server postgresql --workers 2 --scenario dispatch
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.httpclient import Connection, form

N_ATTRS = 126
_SITE_IDX, _LABEL_IDX, _NAME_IDX, _PARAMS_IDX, _DEF_IDX, _PRIO_IDX, _TRF_IDX = 47, 12, 19, 49, 1, 14, 9


def job_state(index: int, site: str) -> list[Any]:
    """A positional job list as panda-client sends (one log file)."""
    job: list[Any] = ["NULL"] * N_ATTRS
    job[_DEF_IDX] = 1
    job[_TRF_IDX] = "http://example.org/trf/hello.sh"
    job[_LABEL_IDX] = "managed"
    job[_PRIO_IDX] = index % 1000
    job[_NAME_IDX] = f"bench-{index}"
    job[_SITE_IDX] = site
    job[_PARAMS_IDX] = "--events 100"
    log = ["NULL"] * 18 + [None]
    log[3], log[4], log[5] = f"bench-{index}.log.tgz", "log", "bench.log"
    return [*job, [log]]


@dataclass
class Stats:
    """Latencies and errors per method."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dispatched: int = 0
    completed: int = 0
    submitted: list[int] = field(default_factory=list)
    #: PandaIDs handed out, and how many were handed out a second time (never allowed).
    handed_out: set[int] = field(default_factory=set)
    duplicates: int = 0
    #: The counts when the measuring window opened (:meth:`mark`).
    window_start: Any = field(default=None, repr=False)

    def add(self, method: str, seconds: float, ok: bool) -> None:
        self.latencies[method].append(seconds)
        if not ok:
            self.errors[method] += 1

    def mark(self) -> None:
        """The start of the measuring window: what was recorded before is warm-up."""
        self.window_start = (
            self.dispatched,
            self.completed,
            {k: len(v) for k, v in self.latencies.items()},
            dict(self.errors),
        )

    def since_mark(self) -> Stats:
        """What was recorded since :meth:`mark` (all of it when never marked); submissions and
        duplicate hand-outs are always the whole run's."""
        mark = self.window_start
        if mark is None:
            return self
        dispatched, completed, lengths, errors = mark
        out = Stats(
            dispatched=self.dispatched - dispatched,
            completed=self.completed - completed,
            submitted=self.submitted,
            handed_out=self.handed_out,
            duplicates=self.duplicates,
        )
        for method, values in self.latencies.items():
            if len(values) > lengths.get(method, 0):
                out.latencies[method] = values[lengths.get(method, 0) :]
        for method, count in self.errors.items():
            out.errors[method] = count - errors.get(method, 0)
        return out

    def got_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Count jobs a dispatch answer handed out; a PandaID seen before is a duplicate."""
        self.dispatched += len(jobs)
        for job in jobs:
            panda_id = int(job["PandaID"])
            if panda_id in self.handed_out:
                self.duplicates += 1
            self.handed_out.add(panda_id)


def _answer_ok(data: bytes) -> bool:
    """A 200 can still carry a refusal: legacy StatusCode other than 0/20, v1 success false."""
    try:
        reply = json.loads(data)
    except ValueError:
        return False
    if not isinstance(reply, dict):
        return True
    if "StatusCode" in reply:
        return reply["StatusCode"] in (0, 20)
    if reply.get("success") is False:
        return reply.get("message") == NO_JOBS_V1  # v1's "no job now" is not an error
    data = reply.get("data")
    if isinstance(data, list):  # update_jobs_bulk: one envelope per entry
        return all(not isinstance(item, dict) or item.get("success") is not False for item in data)
    if isinstance(data, dict):
        # A v1 success can still carry the pilot protocol's refusal (the real server answers
        # a database error so), or tell the pilot to kill a job it holds (a job it does not know).
        return data.get("StatusCode", 0) in (0, 20) and data.get("command") != "tobekilled"
    return True


NO_JOBS_V1 = "No jobs in PanDA"
#: What pilot 3.11 adds to a v1 call: its JSON body is gzip-compressed and says so.
GZIP_JSON = ("Content-Encoding: gzip",)


def v1_body(fields: dict[str, Any]) -> bytes:
    """A v1 call's body as pilot 3.11 sends it: gzip-compressed JSON."""
    return gzip.compress(json.dumps(fields).encode(), compresslevel=6, mtime=0)


@dataclass(frozen=True)
class Call:
    """One request to send: label, path, body, content type, extra headers."""

    label: str
    path: str
    body: bytes
    ctype: str
    headers: tuple[str, ...] = ()


def dispatch_call(args: argparse.Namespace, index: int) -> Call:
    """The pilot's request for one job: legacy getJob or v1 pilot/acquire_jobs (--api)."""
    if args.api == "v1":
        fields: dict[str, Any] = {
            "site_name": args.site,
            "computing_element": args.site,
            "prod_source_label": "managed",
            "node": f"wn{index}",
            "memory": 4000,
            "disk_space": 10000,
        }
        return Call(
            "v1 pilot/acquire_jobs",
            "/api/v1/pilot/acquire_jobs",
            v1_body(fields),
            "application/json",
            GZIP_JSON,
        )
    request = {
        "siteName": args.site,
        "computingElement": args.site,
        "prodSourceLabel": "managed",
        "node": f"wn{index}",
        "mem": 4000,
        "diskSpace": 10000,
    }
    return Call("legacy getJob", "/server/panda/getJob", form(request), "application/x-www-form-urlencoded")


def jobs_in(data: bytes) -> list[dict[str, Any]]:
    """The jobs a getJob or acquire_jobs answer hands out (none for "no jobs")."""
    reply = json.loads(data)
    if "success" in reply and "StatusCode" not in reply:
        body = reply.get("data")
        return list(body.get("jobs") or []) if reply["success"] and isinstance(body, dict) else []
    return [reply] if reply.get("StatusCode") == 0 else []


def update_call(args: argparse.Namespace, index: int, panda_id: int, state: str, log_file: str = "") -> Call:
    """One heartbeat or state change: legacy updateJob or v1 pilot/update_job (--api)."""
    report = json.dumps({log_file: {"guid": "g", "fsize": 100, "adler32": "01020304"}}) if log_file else ""
    if args.api == "v1":
        fields: dict[str, Any] = {
            "job_id": panda_id,
            "job_status": state,
            "attempt_nr": 0,
            "node": f"wn{index}",
            "site_name": args.site,
            "cpu_consumption_time": 10,
        }
        if state == "running":
            fields["max_rss"] = 100000
        if report:
            fields["job_output_report"] = report
        return Call(
            f"v1 pilot/update_job {state}",
            "/api/v1/pilot/update_job",
            v1_body(fields),
            "application/json",
            GZIP_JSON,
        )
    legacy: dict[str, Any] = {
        "jobId": panda_id,
        "state": state,
        "attemptNr": 0,
        "node": f"wn{index}",
        "siteName": args.site,
        "cpuConsumptionTime": 10,
    }
    if state == "running":
        legacy["maxRSS"] = 100000
    if report:
        legacy["xml"] = report
    return Call(
        f"legacy updateJob {state}",
        "/server/panda/updateJob",
        form(legacy),
        "application/x-www-form-urlencoded",
    )


class Pacer:
    """Open-loop pacing (``--rate``): one client's share of the offered rate, at fixed intervals.

    Without it every client sends its next request as soon as the last one is answered (closed
    loop), and by Little's law the mean latency is then clients / throughput whatever the
    server does: 200 pilots at 2,000 requests/s wait 100 ms on average. Real pilots ask for
    work at their own pace; with a rate, latency is measured from the time the request was
    due, so a server that falls behind shows it in the percentiles.
    """

    def __init__(self, args: argparse.Namespace, clients: int) -> None:
        rate = getattr(args, "rate", 0.0) or 0.0
        self.interval = clients / rate if rate > 0 else 0.0
        self.next = time.perf_counter() + random.random() * self.interval

    async def wait(self) -> float | None:
        """Sleep until this client's next request is due; its due time (None when unpaced)."""
        if not self.interval:
            return None
        delay = self.next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due = self.next
        self.next += self.interval
        return due


async def timed(
    stats: Stats,
    conn: Connection,
    method: str,
    verb: str,
    path: str,
    body: bytes = b"",
    ctype: str = "",
    due: float | None = None,
    headers: tuple[str, ...] = (),
) -> tuple[int, bytes]:
    started = time.perf_counter() if due is None else due
    try:
        status, data = await conn.request(verb, path, body, ctype, headers=headers)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        stats.add(method, time.perf_counter() - started, False)
        await conn.close()
        return 0, b""
    stats.add(method, time.perf_counter() - started, status == 200 and _answer_ok(data))
    return status, data


async def submitter(args: argparse.Namespace, stats: Stats, todo: list[int], deadline: float) -> None:
    conn = Connection(args.host, args.port)
    while todo and time.monotonic() < deadline:
        if args.scenario == "soak" and len(stats.submitted) - stats.dispatched > args.backlog:
            await asyncio.sleep(0.2)  # keep a steady queue, not an ever longer one
            continue
        start = todo.pop()
        batch = [job_state(start + i, args.site) for i in range(args.batch)]
        body = json.dumps({"jobs": json.dumps(batch)}).encode()
        status, data = await timed(
            stats, conn, "v1 job/submit", "POST", "/api/v1/job/submit", body, "application/json"
        )
        if status == 200:
            reply = json.loads(data)
            if reply.get("success"):
                stats.submitted.extend(item[0] for item in reply["data"])
    await conn.close()


async def pilot(
    args: argparse.Namespace,
    stats: Stats,
    index: int,
    deadline: float,
    more_coming: asyncio.Event,
    lifecycle: bool,
) -> None:
    conn = Connection(args.host, args.port)
    ask = dispatch_call(args, index)
    empty_rounds = 0
    pacer = Pacer(args, args.pilots) if args.scenario == "dispatch" else None
    while time.monotonic() < deadline:
        due = await pacer.wait() if pacer is not None else None
        status, data = await timed(
            stats, conn, ask.label, "POST", ask.path, ask.body, ask.ctype, due, ask.headers
        )
        if status != 200:
            await asyncio.sleep(0.05)
            continue
        found = jobs_in(data)
        if not found:
            if not more_coming.is_set() and (empty_rounds := empty_rounds + 1) > 3:
                break
            await asyncio.sleep(0.05)
            continue
        empty_rounds = 0
        stats.got_jobs(found)
        if not lifecycle:
            continue
        job = found[0]
        for state in ["starting", "running"] + ["running"] * args.heartbeats + ["finished"]:
            call = update_call(
                args, index, int(job["PandaID"]), state, job["logFile"] if state == "finished" else ""
            )
            status, data = await timed(
                stats, conn, call.label, "POST", call.path, call.body, call.ctype, None, call.headers
            )
            if state == "finished" and status == 200 and _answer_ok(data):
                stats.completed += 1
    await conn.close()


async def harvester(
    args: argparse.Namespace, stats: Stats, index: int, deadline: float, more_coming: asyncio.Event
) -> None:
    """One Harvester thread: bulk acquire_jobs (10-100 jobs), then update_jobs_bulk per state.

    As Harvester's panda_communicator sends them: plain JSON bodies, ``scheduler_id`` naming the
    instance, one ``job_list`` entry per job.
    """
    conn = Connection(args.host, args.port)
    harvester_id = f"bench-harvester-{index}"
    empty_rounds = 0
    while time.monotonic() < deadline:
        ask = {
            "site_name": args.site,
            "computing_element": args.site,
            "prod_source_label": "managed",
            "node": f"{harvester_id}.example.org",
            "n_jobs": random.randint(args.bulk_min, args.bulk_max),
            "scheduler_id": f"harvester-{harvester_id}",
        }
        body = json.dumps(ask).encode()
        status, data = await timed(
            stats,
            conn,
            "v1 pilot/acquire_jobs (bulk)",
            "POST",
            "/api/v1/pilot/acquire_jobs",
            body,
            "application/json",
        )
        if status != 200:
            await asyncio.sleep(0.05)
            continue
        found = jobs_in(data)
        if not found:
            if not more_coming.is_set() and (empty_rounds := empty_rounds + 1) > 3:
                break
            await asyncio.sleep(0.05)
            continue
        empty_rounds = 0
        stats.got_jobs(found)
        for state in ["starting", "running"] + ["running"] * args.heartbeats + ["finished"]:
            entries = []
            for job in found:
                entry: dict[str, Any] = {
                    "job_id": int(job["PandaID"]),
                    "site_name": args.site,
                    "job_status": state,
                    "attempt_nr": 0,
                    "core_count": 1,
                    "node": f"wn-{harvester_id}",
                    "cpu_consumption_time": 10,
                }
                if state == "finished":
                    entry["job_output_report"] = json.dumps(
                        {job["logFile"]: {"guid": "g", "fsize": 100, "adler32": "01020304"}}
                    )
                entries.append(entry)
            body = json.dumps({"job_list": entries, "harvester_id": harvester_id}).encode()
            status, data = await timed(
                stats,
                conn,
                f"v1 pilot/update_jobs_bulk {state}",
                "POST",
                "/api/v1/pilot/update_jobs_bulk",
                body,
                "application/json",
            )
            if state == "finished" and status == 200:
                reply = json.loads(data)
                items = reply.get("data") if reply.get("success") else None
                stats.completed += sum(1 for i in items or [] if isinstance(i, dict) and i.get("success"))
    await conn.close()


async def heartbeater(
    args: argparse.Namespace,
    stats: Stats,
    ids: list[int],
    deadline: float,
    index: int,
    warm_up: bool = False,
) -> None:
    """Random ``running`` heartbeats; with ``warm_up`` one per job of this pilot's slice instead.

    The warm-up moves every dispatched job to running (a state change, the slow path), so the
    measured heartbeats are the steady state of a running job.
    """
    conn = Connection(args.host, args.port)
    mine = iter(ids[index :: args.pilots]) if warm_up else None
    pacer = Pacer(args, args.pilots) if not warm_up else None
    while time.monotonic() < deadline and ids:
        due = await pacer.wait() if pacer is not None else None
        if mine is not None:
            panda_id = next(mine, -1)
            if panda_id < 0:
                break
        else:
            panda_id = ids[random.randrange(len(ids))]
        call = update_call(args, index, panda_id, "running")
        await timed(stats, conn, call.label, "POST", call.path, call.body, call.ctype, due, call.headers)
    await conn.close()


async def reader(args: argparse.Namespace, stats: Stats, ids: list[int], deadline: float) -> None:
    conn = Connection(args.host, args.port)
    while time.monotonic() < deadline and ids:
        body = json.dumps({"job_ids": [ids[random.randrange(len(ids))]]}).encode()
        await timed(
            stats,
            conn,
            "v1 job/get_description",
            "POST",
            "/api/v1/job/get_description",
            body,
            "application/json",
        )
    await conn.close()


def rss_kb(pids: list[int]) -> int:
    """Resident memory of the server processes (and their children), in KiB."""
    total = 0
    seen = set()
    queue = list(pids)
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            queue.extend(int(c) for c in children)
        except (OSError, StopIteration):
            continue
    return total


async def sample_rss(pids: list[int], out: list[tuple[float, int]], stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        out.append((round(time.monotonic() - start, 1), rss_kb(pids)))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpu_ticks(pids: list[int], database: str = "") -> dict[tuple[str, int], int]:
    """CPU ticks so far per (kind, pid): the server's process tree, postgres processes, this
    load generator; and the whole machine's busy ticks (from /proc/stat) as ("machine busy", 0).
    Kept per process so that processes ending during the window (other users' database
    sessions) do not count as negative time."""
    server: set[int] = set()
    queue = list(pids)
    while queue:
        pid = queue.pop()
        if pid not in server:
            server.add(pid)
            queue.extend(_children(pid))
    out: dict[tuple[str, int], int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        pid = int(entry.name)
        if pid in server:
            out[("server", pid)] = ticks
        elif pid == os.getpid():
            out[("load generator", pid)] = ticks
        elif comm.startswith("postgres"):
            # A backend's title names its database ("postgres: user db 127.0.0.1(port) idle").
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                title = ""
            mine = not database or f" {database} " in title
            out[("postgres" if mine else "postgres, other databases", pid)] = ticks
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    out[("machine busy", 0)] = sum(int(v) for v in cpu) - int(cpu[3]) - int(cpu[4])
    return out


def start_profile(args: argparse.Namespace, pids: list[int]) -> None:
    """Mark the start of the measuring window: CPU counters, and py-spy when --profile is set."""
    args.cpu_start = (time.monotonic(), _cpu_ticks(pids, args.db_name))
    if not args.profile or not pids:
        return
    workers = [c for p in pids for c in _children(p)] or pids
    args.profiler = subprocess.Popen(
        [
            args.py_spy,
            "record",
            "--pid",
            str(workers[0]),
            "--duration",
            str(int(args.profile)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            *(["--gil"] if args.profile_gil else []),
            "--output",
            args.profile_out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish_profile(args: argparse.Namespace, top: int = 25) -> dict[str, Any] | None:
    """Wait for py-spy and summarise: the functions most often on the stack, and at its top."""
    proc = getattr(args, "profiler", None)
    if proc is None:
        return None
    try:
        proc.wait(args.profile + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    inclusive: dict[str, int] = defaultdict(int)
    leaf: dict[str, int] = defaultdict(int)
    total = 0
    try:
        lines = Path(args.profile_out).read_text().splitlines()
    except OSError:
        return {"error": "py-spy wrote nothing (is it installed and allowed to ptrace?)"}

    def name(frame: str) -> str:
        func, _, where = frame.partition(" (")
        return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else func

    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [name(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n

    def share(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(k, round(100 * v / total, 1)) for k, v in ranked]

    return {
        "samples": total,
        "raw": args.profile_out,
        "on_stack_pct": share(inclusive),
        "self_pct": share(leaf),
    }


async def opened_connections(args: argparse.Namespace) -> dict[str, float | None]:
    """The server's count of database connections opened (/metrics), and on PostgreSQL the
    database's session count (``pg_stat_database.sessions``, read from the admin database so
    that reading it opens no session in the measured one)."""
    out: dict[str, float | None] = {"server": None, "pg_sessions": None, "statements": None, "commits": None}
    names = {
        "pandawms_db_connections_opened_total": "server",
        "pandawms_db_statements_total": "statements",
        "pandawms_db_commits_total": "commits",
    }
    conn = Connection(args.host, args.port)
    try:
        status, data = await conn.request("GET", "/metrics", accept_json=False)
        if status == 200:
            for line in data.decode(errors="replace").splitlines():
                name, _, value = line.partition(" ")
                if name in names:
                    out[names[name]] = float(value)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        await conn.close()
    if args.start_server == "postgresql" or args.db_name not in ("", "<none>"):
        from sqlalchemy import create_engine, text

        admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as db:
                db.execute(text("SELECT pg_stat_clear_snapshot()"))
                value = db.execute(
                    text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": args.db_name}
                ).scalar()
                out["pg_sessions"] = float(value) if value is not None else None
        finally:
            admin.dispose()
    return out


async def begin_window(args: argparse.Namespace, pids: list[int]) -> None:
    """Start of the measuring window: connection counters, CPU counters, profiler."""
    args.connections_start = await opened_connections(args)
    start_profile(args, pids)


async def end_window(args: argparse.Namespace) -> dict[str, Any]:
    """Connections opened during the window (and in the whole run, by the server's count)."""
    after = await opened_connections(args)
    before = getattr(args, "connections_start", None) or {}
    window = {
        key: (after[key] - before[key])
        if after.get(key) is not None and before.get(key) is not None
        else None
        for key in after
    }
    statements = {key: window.pop(key, None) for key in ("statements", "commits")}
    return {"in_window": window, "since_server_start": after["server"], "sent_in_window": statements}


def refresh_statistics(args: argparse.Namespace) -> None:
    """``VACUUM ANALYZE`` the live job table after the setup submission (PostgreSQL).

    A table that went from empty to tens of thousands of jobs seconds ago has no planner
    statistics yet (autovacuum looks once a minute), so PostgreSQL would plan dispatch for an
    empty table. A production table always has them; like pgbench's vacuum before a run, this
    measures the server in that steady state rather than in its first minute.
    """
    url = getattr(args, "db_url", "") or ""
    if not url.startswith("postgresql"):
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for table in args.analyze.split(","):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        engine.dispose()


async def warm_up(
    args: argparse.Namespace,
    pids: list[int],
    stats: Stats,
    phases: dict[str, float],
    started: float,
    clients: list[asyncio.Task[Any]],
) -> float:
    """Let the clients run ``--warm-up`` seconds, then open the measuring window.

    Rates, latencies, statements, CPU and connections are counted from then on: a worker's pool
    opens its connections as the load first reaches it, once, and that start-up is not the
    steady state the window measures. Returns the window's start.
    """
    if args.warm_up > 0:
        await asyncio.wait(clients, timeout=args.warm_up)
        if all(task.done() for task in clients):
            raise SystemExit("the run ended within --warm-up: give more --jobs, or --warm-up 0")
        phases["warm_up"] = time.monotonic() - started
    stats.mark()
    await begin_window(args, pids)
    return time.monotonic()


async def submit_all(args: argparse.Namespace, stats: Stats, deadline: float, start: int = 0) -> None:
    todo = list(range(start, args.jobs, args.batch))[::-1]
    await asyncio.gather(*(submitter(args, stats, todo, deadline) for _ in range(args.submitters)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parsed = urllib.parse.urlsplit(args.url)
    args.host, args.port = parsed.hostname or "127.0.0.1", parsed.port or 80
    stats = Stats()
    pids = [int(p) for p in args.server_pid]
    rss: list[tuple[float, int]] = []
    stop_rss = asyncio.Event()
    rss_task = asyncio.create_task(sample_rss(pids, rss, stop_rss)) if pids else None
    deadline = time.monotonic() + args.duration
    more = asyncio.Event()
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    if args.scenario in ("dispatch", "heartbeat", "read"):
        await submit_all(args, stats, deadline)
        phases["submit"] = time.monotonic() - t0
        refresh_statistics(args)
        if args.scenario == "read":
            await begin_window(args, pids)
        t1 = time.monotonic()
        measure = Stats()
        if args.scenario == "dispatch":
            pilots = [
                asyncio.create_task(pilot(args, measure, i, deadline, more, False))
                for i in range(args.pilots)
            ]
            t1 = await warm_up(args, pids, measure, phases, t1, pilots)
            await asyncio.gather(*pilots)
            measure = measure.since_mark()
        elif args.scenario == "heartbeat":
            await asyncio.gather(
                *(pilot(args, Stats(), i, deadline, more, False) for i in range(args.pilots))
            )
            await asyncio.gather(
                *(heartbeater(args, Stats(), stats.submitted, deadline, i, True) for i in range(args.pilots))
            )
            phases["warm_up"] = time.monotonic() - t1
            await begin_window(args, pids)
            t1 = time.monotonic()
            hb_deadline = min(deadline, t1 + args.measure)
            await asyncio.gather(
                *(heartbeater(args, measure, stats.submitted, hb_deadline, i) for i in range(args.pilots))
            )
        else:
            read_deadline = min(deadline, t1 + args.measure)
            await asyncio.gather(
                *(reader(args, measure, stats.submitted, read_deadline) for _ in range(args.readers))
            )
        phases["measure"] = time.monotonic() - t1
        measure.submitted = stats.submitted
        for method, values in stats.latencies.items():
            measure.latencies["(setup) " + method] = values
        stats = measure
    else:
        # One batch first, then planner statistics (see refresh_statistics), then the run.
        await submitter(args, stats, [0], deadline)
        refresh_statistics(args)
        t0 = time.monotonic()
        more.set()
        if args.scenario == "soak":
            args.jobs = max(args.jobs, 10**8)  # bounded by --duration, not by a job count
        submit_task = asyncio.create_task(submit_all(args, stats, deadline, start=args.batch))
        if args.scenario == "harvester":
            clients = [harvester(args, stats, i, deadline, more) for i in range(args.pilots)]
        else:
            clients = [pilot(args, stats, i, deadline, more, True) for i in range(args.pilots)]
        pilots = [asyncio.create_task(client) for client in clients]
        t0 = await warm_up(args, pids, stats, phases, t0, pilots)
        await submit_task
        more.clear()
        await asyncio.gather(*pilots)
        stats = stats.since_mark()
        phases["measure"] = time.monotonic() - t0
    connections = await end_window(args)
    stop_rss.set()
    profile = finish_profile(args)
    cpu_split = None
    if getattr(args, "cpu_start", None):
        started_at, before = args.cpu_start
        after, span = _cpu_ticks(pids, args.db_name), time.monotonic() - started_at
        hz = os.sysconf("SC_CLK_TCK")
        # Cores used on average during the measuring window (postgres: every backend on the box).
        used: dict[str, int] = defaultdict(int)
        for (kind, pid), ticks in after.items():
            used[kind] += ticks - before.get((kind, pid), 0)
        cpu_split = {k: round(v / hz / span, 2) for k, v in used.items()} if span > 0 else None
    if rss_task:
        await rss_task
    elapsed = phases["measure"]
    methods = {}
    for method, values in sorted(stats.latencies.items()):
        ordered = sorted(values)
        span = phases.get("submit", elapsed) if method.startswith("(setup)") else elapsed

        def pct(p: float, data: list[float] = ordered) -> float:
            return round(data[min(len(data) - 1, int(p * len(data)))] * 1000, 2)

        methods[method] = {
            "count": len(values),
            "errors": stats.errors.get(method.replace("(setup) ", ""), 0),
            "per_s": round(len(values) / span, 1) if span else 0.0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(values) * 1000, 2),
        }
    rss_slope = None
    if len(rss) >= 20:
        # KiB per minute over the second half of the run (after warm-up: pools, caches, imports).
        half = rss[len(rss) // 2 :]
        span_s = half[-1][0] - half[0][0]
        rss_slope = round((half[-1][1] - half[0][1]) / span_s * 60, 1) if span_s > 0 else None
    finished = stats.completed
    projection = None
    if args.scenario in ("lifecycle", "soak", "harvester") and finished and elapsed:
        per_s = finished / elapsed
        projection = {
            "jobs_completed_per_s": round(per_s, 1),
            "updates_per_job": 3 + args.heartbeats,
            "hours_for_1_5M_jobs": round(1_500_000 / per_s / 3600, 2),
            "jobs_per_day": int(per_s * 86400),
        }
    # Per job (completed for the lifecycle scenarios, dispatched or heartbeats otherwise): the
    # statements and commits the server sent, and its CPU; steadier than rates on a shared box.
    units = finished if args.scenario in ("lifecycle", "soak", "harvester") else stats.dispatched
    if args.scenario == "heartbeat":
        units = sum(len(v) for k, v in stats.latencies.items() if not k.startswith("(setup)"))
    sent = connections.pop("sent_in_window", {})
    per_job = None
    if units:
        server_cores = (cpu_split or {}).get("server")
        per_job = {
            "units": units,
            "statements": round(sent["statements"] / units, 2)
            if sent.get("statements") is not None
            else None,
            "commits": round(sent["commits"] / units, 3) if sent.get("commits") is not None else None,
            "server_cpu_ms": round(server_cores * elapsed / units * 1000, 3) if server_cores else None,
        }
    return {
        "scenario": args.scenario,
        "per_job": per_job,
        "url": args.url,
        "loadavg_before": args.loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "projection": projection,
        "rss_kib_per_min_second_half": rss_slope,
        "pilots": args.pilots,
        "offered_rate_per_s": args.rate or None,
        "jobs": args.jobs,
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "submitted": len(stats.submitted),
        "dispatched": stats.dispatched,
        "dispatched_per_s": round(stats.dispatched / elapsed, 1) if elapsed else 0.0,
        "duplicate_dispatches": stats.duplicates,
        "completed": stats.completed,
        "api": args.api,
        "db_connections_opened": connections,
        "methods": methods,
        "rss_kb": {"first": rss[0][1], "max": max(r for _, r in rss), "last": rss[-1][1]} if rss else None,
        "rss_series": rss if args.rss_series else None,
        "profile": profile,
        "cpu_cores_used": cpu_split,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"scenario {result['scenario']} (offered {result['offered_rate_per_s'] or 'closed loop'}/s): "
        f"{result['submitted']} submitted, {result['dispatched']} dispatched "
        f"({result['dispatched_per_s']}/s), phases {result['phases_s']}, rss {result['rss_kb']}, "
        f"rss slope {result['rss_kib_per_min_second_half']} KiB/min, load {result['loadavg_before']} -> "
        f"{result['loadavg_after']}, projection {result['projection']}, cores used {result['cpu_cores_used']}, "
        f"api {result['api']}, completed {result['completed']}, db connections opened {result['db_connections_opened']}",
        f"per job: {result['per_job']}",
        f"{'method':<34} {'count':>8} {'err':>5} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
    ]
    for method, m in result["methods"].items():
        lines.append(
            f"{method:<34} {m['count']:>8} {m['errors']:>5} {m['per_s']:>9} {m['p50_ms']:>8} "
            f"{m['p95_ms']:>8} {m['p99_ms']:>8}"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def started_server(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """``pandawms httpd`` on a fresh database and a free loopback port; yields (url, pid)."""
    from benchmarks.pgdb import scratch_database  # SQLAlchemy only when a server is started here

    with tempfile.TemporaryDirectory(prefix="pandabench-") as tmp, contextlib.ExitStack() as scratch:
        if args.start_server == "postgresql":
            db_url = scratch.enter_context(scratch_database(args.admin_url, args.bench_db))
        else:
            db_url = f"sqlite:///{tmp}/bench.sqlite"
        args.db_url = db_url

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {
            **os.environ,
            "PANDA_DB_URL": db_url,
            "PANDA_DATA_DIR": tmp,
            "PANDA_LOG_DIR": f"{tmp}/log",
            "PANDA_PORT": str(port),
            "PANDA_WORKERS": str(args.workers),
        }
        for item in args.server_env:
            key, _, value = item.partition("=")
            env[key] = value
        subprocess.run(
            [sys.executable, "-m", "pandawms", "db", "init"], env=env, check=True, capture_output=True
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "pandawms", "httpd"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(f"{tmp}/httpd.stderr", "wb"),  # noqa: SIM115 - lives as long as the server
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "pandawms httpd did not start: " + open(f"{tmp}/httpd.stderr").read()[-2000:]
                    )
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2):  # noqa: S310 - loopback
                        break
                except OSError:
                    time.sleep(0.2)
            yield url, proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:25080")
    parser.add_argument(
        "--scenario",
        choices=("dispatch", "heartbeat", "lifecycle", "read", "soak", "harvester"),
        default="dispatch",
    )
    parser.add_argument(
        "--api",
        choices=("legacy", "v1"),
        default="legacy",
        help="the pilots' calls: legacy getJob/updateJob, or v1 pilot/acquire_jobs and pilot/update_job"
        " as pilot 3.11 sends them (gzip JSON); the harvester scenario always uses v1",
    )
    parser.add_argument("--bulk-min", type=int, default=10, help="harvester: fewest jobs per acquire_jobs")
    parser.add_argument("--bulk-max", type=int, default=100, help="harvester: most jobs per acquire_jobs")
    parser.add_argument(
        "--start-server", choices=("sqlite", "postgresql"), help="start pandawms httpd on a fresh database"
    )
    parser.add_argument("--workers", type=int, default=2, help="httpd workers (with --start-server)")
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--bench-db",
        default="pandawms_bench",
        help="with --start-server postgresql: the database made (and dropped) for the server",
    )
    parser.add_argument(
        "--db-url",
        default="",
        help="the server's database (with --url): refresh its planner statistics after setup",
    )
    parser.add_argument(
        "--db-name",
        default="",
        help="with --url: the server's PostgreSQL database, whose backends count as its postgres CPU",
    )
    parser.add_argument(
        "--analyze",
        default="jobs",
        help="tables (comma list) to VACUUM ANALYZE after setup (PostgreSQL; another server's names)",
    )
    parser.add_argument(
        "--server-env", action="append", default=[], help="KEY=VALUE for the started server (repeatable)"
    )
    parser.add_argument(
        "--backlog", type=int, default=2000, help="soak: most queued jobs before submitters wait"
    )
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="jobs per submit call")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--pilots", type=int, default=200)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered requests/s over all pilots (dispatch, heartbeat): open loop, latency from the due time;"
        " 0 (default) = closed loop, each pilot asks again as soon as it is answered",
    )
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument(
        "--heartbeats", type=int, default=1, help="extra running heartbeats per job (lifecycle)"
    )
    parser.add_argument("--duration", type=float, default=300, help="hard limit, seconds")
    parser.add_argument(
        "--measure", type=float, default=30, help="measuring window for heartbeat/read, seconds"
    )
    parser.add_argument(
        "--warm-up",
        type=float,
        default=3,
        help="dispatch, lifecycle, soak, harvester: seconds of load before the measuring window opens",
    )
    parser.add_argument("--site", default="BENCH_SITE")
    parser.add_argument("--server-pid", action="append", default=[], help="server PID(s) for RSS sampling")
    parser.add_argument("--rss-series", action="store_true", help="keep the RSS samples in the JSON")
    parser.add_argument("--json-out", help="write the result as JSON here")
    parser.add_argument(
        "--profile", type=float, default=0, help="py-spy the first worker for this many seconds of the run"
    )
    parser.add_argument(
        "--profile-gil", action="store_true", help="sample only the thread holding the GIL (Python CPU time)"
    )
    parser.add_argument("--profile-out", default="/tmp/pandabench-profile.txt", help="py-spy raw stacks")
    parser.add_argument("--py-spy", default=str(Path(sys.executable).with_name("py-spy")))
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        print("pandabench only drives servers on loopback", file=sys.stderr)
        return 2
    args.loadavg_before = [round(x, 2) for x in os.getloadavg()]
    # Whose database sessions count as "postgres": the started server's (none on SQLite); all for an external one.
    args.db_name = args.db_name or {"postgresql": args.bench_db, "sqlite": "<none>"}.get(
        args.start_server or "", ""
    )
    if args.start_server:
        with started_server(args) as (url, pid):
            args.url = url
            args.server_pid = [*args.server_pid, str(pid)]
            result = asyncio.run(run(args))
    else:
        result = asyncio.run(run(args))
    if args.scenario == "harvester":
        result["api"] = "v1"
    result["server"] = args.start_server or "external"
    result["workers"] = args.workers if args.start_server else None
    print(table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
