"""The daemon runner: each task on its period, in its own process, with a time limit.

A task runs in a forked child so that one that hangs can be killed without taking the runner
down, and one that crashes is recorded and retried next period while the others go on. Each
run is written to ``daemon_runs`` (start, end, outcome, message) and logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from sqlalchemy import func, select

from pandawms.config import Settings, mask_secrets
from pandawms.core.runtime import Runtime, utcnow
from pandawms.daemon.catalog import TASKS
from pandawms.daemon.leases import holders, release, try_acquire
from pandawms.daemon.registry import Task
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema import daemon_runs
from pandawms.infra.sdnotify import sd_notify
from pandawms.logsetup import reopen_logs
from pandawms.model.errors import PandaError

log = logging.getLogger("pandawms.daemon")


def lease_ttl(task: Task) -> int:
    """Seconds a running task's lease lasts: its period plus a grace (5 s to 30 s), so a runner
    stalled by a busy machine does not lose the lease between two renewals. A finished run
    shortens it to the end of its period; a runner that dies holds it at most this much longer."""
    return task.period + min(30, max(5, task.period))


_fork = multiprocessing.get_context("fork")


def enabled_tasks(settings: Settings) -> list[Task]:
    """The tasks this node runs, with periods from ``daemon_periods`` applied."""
    periods: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in settings.daemon_periods.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in TASKS:
            raise PandaError(f"daemon_periods names an unknown task {name.strip()!r}")
        try:
            periods[name.strip()] = max(1, int(value))
        except ValueError:
            raise PandaError(
                f"daemon_periods: period of {name.strip()} must be whole seconds, got {value!r}"
            ) from None
    wanted = settings.daemon_tasks.strip()
    names = list(TASKS) if wanted in ("", "all") else [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise PandaError(
            f"daemon_tasks names unknown task(s): {', '.join(unknown)}; known: {', '.join(TASKS)}"
        )
    out = []
    for name in names:
        base = TASKS[name]
        out.append(
            Task(base.name, base.func, periods.get(name, base.period), base.fleet_wide, base.description)
        )
    return out


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this task process when its runner dies (even by SIGKILL).

    An orphaned task would go on working after the runner's lease lapsed, so another node
    could run the same task at the same time.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the runner died before the request took effect
        os._exit(1)


def _child(task: Task, settings: Settings, pipe: Connection, parent_engine: Any, parent: int) -> None:
    _die_with_parent(parent)
    parent_engine.dispose(close=False)  # connections of the parent stay the parent's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    rt = Runtime.from_settings(settings)
    try:
        pipe.send(("ok", str(task.func(rt))[:1000]))
    except BaseException as exc:  # noqa: BLE001 - everything a task raises is reported
        tail = traceback.format_exc().strip().splitlines()[-3:]
        # Stored and shown by the monitor and /metrics: a URL in a driver's message is masked.
        pipe.send(("failed", mask_secrets(f"{type(exc).__name__}: {exc} | {' / '.join(tail)}")[:1000]))
    finally:
        rt.engine.dispose()


@dataclass
class _Running:
    task: Task
    process: Any
    pipe: Connection
    run_id: int
    started: float
    deadline: float
    renewed: float = 0.0


class Runner:
    """Runs the enabled tasks until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rt = Runtime.from_settings(settings)
        self.tasks = enabled_tasks(settings)
        self.owner = f"{self.rt.node}:{os.getpid()}"
        self.next_due = {t.name: 0.0 for t in self.tasks}
        self.running: dict[str, _Running] = {}
        self.stopping = False
        self.hup = False

    def _record_start(self, task: Task) -> int:
        with write_tx(self.rt.engine) as conn:
            result = conn.execute(
                daemon_runs.insert().values(
                    task=task.name, node=self.rt.node, started=utcnow(), outcome="running"
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def _record_end(self, run_id: int, outcome: str, message: str) -> None:
        with write_tx(self.rt.engine) as conn:
            conn.execute(
                daemon_runs.update()
                .where(daemon_runs.c.id == run_id)
                .values(finished=utcnow(), outcome=outcome, message=message[:1000])
            )

    def _start(self, task: Task) -> None:
        if task.fleet_wide and not try_acquire(self.rt, task.name, self.owner, lease_ttl(task)):
            log.debug("%s: another node holds the lease", task.name)
            return
        run_id = self._record_start(task)
        receiver, sender = _fork.Pipe(duplex=False)
        process = _fork.Process(
            target=_child,
            args=(task, self.settings, sender, self.rt.engine, os.getpid()),
            name=f"pandawms-{task.name}",
            daemon=True,
        )
        process.start()
        sender.close()
        now = time.monotonic()
        self.running[task.name] = _Running(task, process, receiver, run_id, now, now + task.timeout, now)

    def _renew(self, run: _Running) -> None:
        """Keep the lease of a fleet-wide task for as long as it runs, which may exceed its period.

        The lease is taken for one period; a run that lasts longer (up to its time limit) would
        otherwise let another node start the same task while this one is still at work.
        """
        now = time.monotonic()
        if not run.task.fleet_wide or now - run.renewed < max(run.task.period / 3, 0.5):
            return
        if try_acquire(self.rt, run.task.name, self.owner, lease_ttl(run.task)):
            run.renewed = now
        else:
            log.error("%s: lost its lease while running; stopping it", run.task.name)
            run.deadline = now

    def _collect(self) -> None:
        for name, run in list(self.running.items()):
            elapsed = time.monotonic() - run.started
            if run.process.is_alive() and time.monotonic() < run.deadline and not self.stopping:
                try:
                    self._renew(run)
                except Exception:  # noqa: BLE001 - the database may be away; the next loop retries
                    log.exception("%s: could not renew its lease", name)
                continue
            if run.process.is_alive():
                run.process.kill()
                run.process.join(5)
                outcome = "stopped" if self.stopping else "timeout"
                message = f"killed after {elapsed:.1f}s (limit {run.task.timeout}s)"
                log.error("%s: %s", name, message)
            else:
                run.process.join()
                outcome, message = "failed", f"exited with code {run.process.exitcode} without a result"
                if run.pipe.poll():
                    outcome, message = run.pipe.recv()
                level = logging.INFO if outcome == "ok" else logging.ERROR
                log.log(level, "%s: %s in %.2fs: %s", name, outcome, elapsed, message)
            run.pipe.close()
            self._record_end(run.run_id, outcome, message)
            if run.task.fleet_wide:
                # Keep the lease to the end of this period so no other node runs it again early.
                release(
                    self.rt,
                    name,
                    self.owner,
                    utcnow() + dt.timedelta(seconds=max(run.task.period - elapsed, 0)),
                )
            del self.running[name]

    def _on_term(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self.hup = True

    def run(self) -> int:
        """The main loop."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        log.info("daemon %s running %s", self.owner, ", ".join(f"{t.name}/{t.period}s" for t in self.tasks))
        sd_notify("READY=1\nSTATUS=running " + ", ".join(t.name for t in self.tasks))
        while not self.stopping:
            if self.hup:
                self.hup = False
                reopen_logs()
            now = time.monotonic()
            for task in self.tasks:
                if task.name not in self.running and now >= self.next_due[task.name]:
                    self.next_due[task.name] = now + task.period
                    try:
                        self._start(task)
                    except Exception:  # noqa: BLE001 - the database may be away; try next period
                        log.exception("%s: could not start", task.name)
            try:
                self._collect()
            except Exception:  # noqa: BLE001
                log.exception("could not record a task run")
            time.sleep(0.2)
        sd_notify("STOPPING=1")
        self._collect()
        self.rt.engine.dispose()
        return 0


def run_once(settings: Settings, name: str) -> tuple[str, str]:
    """Run one task now in this process (operators, tests); returns (outcome, message)."""
    task = next((t for t in enabled_tasks(settings) if t.name == name), None) or TASKS.get(name)
    if task is None:
        raise PandaError(f"unknown daemon task {name!r}; known: {', '.join(TASKS)}")
    rt = Runtime.from_settings(settings)
    try:
        return "ok", task.func(rt)
    finally:
        rt.engine.dispose()


def describe(settings: Settings) -> list[dict[str, Any]]:
    """For ``--list``: each task with its last run, next run and lease holder."""
    rt = Runtime.from_settings(settings)
    try:
        leases = holders(rt)
        with read_tx(rt.engine) as conn:
            latest = {
                row[0]: row[1]
                for row in conn.execute(
                    select(daemon_runs.c.task, func.max(daemon_runs.c.id)).group_by(daemon_runs.c.task)
                )
            }
            runs = {}
            if latest:
                rows = conn.execute(
                    select(daemon_runs).where(daemon_runs.c.id.in_(list(latest.values())))
                ).mappings()
                runs = {row["task"]: dict(row) for row in rows}
    finally:
        rt.engine.dispose()
    out = []
    now = utcnow()
    for task in enabled_tasks(settings):
        last = runs.get(task.name)
        lease = leases.get(task.name)
        next_run = (last["started"] + dt.timedelta(seconds=task.period)) if last else None
        out.append(
            {
                "task": task.name,
                "period": task.period,
                "fleet_wide": task.fleet_wide,
                "description": task.description,
                "last_run": last["started"] if last else None,
                "last_outcome": last["outcome"] if last else None,
                "last_node": last["node"] if last else None,
                "last_message": last["message"] if last else None,
                "next_run": max(next_run, now) if next_run else now,
                "lease_holder": lease["owner"] if lease and lease["expires"] > now else None,
                "lease_expires": lease["expires"] if lease else None,
            }
        )
    return out
