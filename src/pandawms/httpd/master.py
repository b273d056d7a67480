"""The httpd master: sockets, workers, supervision, signals and the systemd status line."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

from pandawms.config import Settings
from pandawms.httpd.notify import sd_notify
from pandawms.httpd.stats import SharedStats, StatusLine
from pandawms.logsetup import reopen_logs

log = logging.getLogger("pandawms.httpd")


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _listen_per_worker(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker slot, all on ``port`` (``SO_REUSEPORT``).

    With one shared socket, whichever worker woke first accepted a whole burst of new
    connections (uvloop accepts until the queue is empty): 200 pilots connecting at once
    split 160/40 and one worker's core saturated while the other idled, for as long as the
    keep-alive connections lasted (benchmarks/README.md). With a socket per slot the kernel
    spreads connections evenly by address hash. The master keeps every socket open, so the
    connections queued on a slot whose worker died wait for its replacement instead of being
    refused. Where SO_REUSEPORT is missing, all slots share one socket as before.
    """
    if count <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [_listen(host, port)] * max(count, 1)
    first = _listen(host, port, reuse_port=True)
    port = first.getsockname()[1]
    return [first, *(_listen(host, port, reuse_port=True) for _ in range(count - 1))]


def _close_all(socks: list[socket.socket]) -> None:
    for sock in set(socks):
        sock.close()


def _stop_with_master(master: int) -> None:
    """Have Linux send this child SIGTERM when the master dies, even by SIGKILL.

    Without it a killed master leaves its workers serving on the inherited socket, unsupervised
    and outside any restart; with it they finish their requests and exit, as on a normal stop.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != master:  # the master died before the request took effect
        os._exit(0)


class Master:
    """Forks and supervises the workers until told to stop."""

    def __init__(self, settings: Settings, with_daemon: bool = False) -> None:
        self.settings = settings
        self.with_daemon = with_daemon
        self.daemon_pid: int | None = None
        self.n_workers = settings.workers or os.cpu_count() or 1
        self.stats = SharedStats(self.n_workers, settings.worker_threads)
        self.status = StatusLine(self.stats)
        self.http_socks = _listen_per_worker(settings.host, settings.port, self.n_workers)
        self.https_socks = (
            _listen_per_worker(settings.host, settings.https_port, self.n_workers)
            if settings.tls_cert
            else []
        )
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.hup = False

    def _spawn(self, slot: int) -> None:
        master = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _stop_with_master(master)
                from pandawms.httpd.worker import run_worker

                https = self.https_socks[slot] if self.https_socks else None
                # Only the master may keep other slots' sockets open: a worker holding them would
                # keep them listening, with nobody accepting, after the master is gone.
                _close_all(
                    [s for s in self.http_socks + self.https_socks if s not in (self.http_socks[slot], https)]
                )
                run_worker(slot, self.settings, self.stats, self.http_socks[slot], https)
            except BaseException:  # noqa: BLE001 - a child must never return into the master's code
                log.exception("worker %d crashed", slot)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot

    def _spawn_daemon(self) -> None:
        """``serve`` runs the periodic tasks too, in a child supervised like the workers."""
        master = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _stop_with_master(master)
                _close_all(self.http_socks + self.https_socks)
                from pandawms.daemon.runner import Runner

                code = Runner(self.settings).run()
            except BaseException:  # noqa: BLE001 - a child must never return into the master's code
                log.exception("daemon crashed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.daemon_pid = pid

    def _on_term(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self.hup = True

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.daemon_pid:
                self.daemon_pid = None
                if not self.stopping:
                    log.error("daemon (pid %d) exited with status %d; starting a new one", pid, status)
                    time.sleep(0.5)
                    self._spawn_daemon()
                continue
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            if not self.stopping:
                log.error("worker %d (pid %d) exited with status %d; starting a new one", slot, pid, status)
                time.sleep(0.5)
                self._spawn(slot)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit code."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        for slot in range(self.n_workers):
            self._spawn(slot)
        if self.with_daemon:
            self._spawn_daemon()
        where = f"http://{self.settings.host}:{self.settings.port}"
        if self.https_socks:
            where += f" and https://{self.settings.host}:{self.settings.https_port}"
        log.info("httpd master %d: %d workers on %s", os.getpid(), self.n_workers, where)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self.status.render()}")
        next_status = time.monotonic() + self.settings.status_interval
        while not self.stopping:
            time.sleep(0.2)
            if self.hup:
                self.hup = False
                reopen_logs()
                for pid in [*self.children, *([self.daemon_pid] if self.daemon_pid else [])]:
                    os.kill(pid, signal.SIGHUP)
                log.info("log files reopened")
            self._reap()
            if time.monotonic() >= next_status:
                sd_notify("STATUS=" + self.status.render())
                next_status = time.monotonic() + self.settings.status_interval
        sd_notify("STOPPING=1")
        log.info("stopping %d workers", len(self.children))
        if self.daemon_pid is not None:
            self.children[self.daemon_pid] = -1
            self.daemon_pid = None
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for pid in list(self.children):
            os.kill(pid, signal.SIGKILL)
        _close_all(self.http_socks + self.https_socks)
        return 0


def run_httpd(settings: Settings, with_daemon: bool = False) -> int:
    """``pandawms httpd`` (and ``pandawms serve``, which adds the daemon)."""
    try:
        master = Master(settings, with_daemon)
    except OSError as exc:
        print(f"pandawms httpd: cannot listen: {exc}", file=sys.stderr)
        return 1
    return master.run()
