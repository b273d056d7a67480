"""One httpd worker process: the app served on the inherited HTTP and HTTPS sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from anyio import to_thread

from pandawms.api.app import PandaApp, create_app
from pandawms.config import Settings
from pandawms.core.runtime import Runtime
from pandawms.db.engine import open_pool
from pandawms.db.hangguard import install_hang_guard
from pandawms.httpd.limits import connection_cap
from pandawms.httpd.protocol import limited_protocol
from pandawms.httpd.stats import SharedStats
from pandawms.httpd.tls import make_server_context
from pandawms.logsetup import reopen_logs

log = logging.getLogger("pandawms.httpd")


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the worker (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(
    settings: Settings, stats: SharedStats, http_sock: socket.socket, https_sock: socket.socket | None
) -> None:
    to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
    rt = Runtime.from_settings(settings)
    install_hang_guard(rt.engine, settings.db_request_timeout)
    app = create_app(rt, stats)
    await _warm_up(rt, app)
    _freeze_startup_objects()
    servers: list[_QuietServer] = []
    common: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
        "timeout_keep_alive": settings.http_keepalive_timeout,
        "timeout_graceful_shutdown": 20,
        "server_header": False,
        # uvicorn by default replaces the connection's peer address with X-Forwarded-For when
        # the peer is local (FORWARDED_ALLOW_IPS, 127.0.0.1): any local client could then pose
        # as a trusted front end and have its DN headers believed. The app sees the socket's
        # peer, always; api/auth.py decides trust from it and only then reads X-Forwarded-For.
        "proxy_headers": False,
    }
    protocol = limited_protocol(
        connection_cap(settings.max_connections, settings.db_pool_size + settings.db_max_overflow),
        settings.http_header_timeout,
        settings.http_body_timeout,
        settings.busy_retry_after,
    )
    servers.append(_QuietServer(uvicorn.Config(app, http=protocol, **common)))
    socks = [http_sock]
    if https_sock is not None:
        context = make_server_context(settings)
        https_config = uvicorn.Config(
            app,
            http=protocol,
            ssl_certfile=settings.tls_cert,
            ssl_context_factory=lambda _config, _default: context,
            **common,
        )
        servers.append(_QuietServer(https_config))
        socks.append(https_sock)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, reopen_logs)
    try:
        await asyncio.gather(
            *(server.serve(sockets=[sock]) for server, sock in zip(servers, socks, strict=True))
        )
    finally:
        rt.engine.dispose()


async def _warm_up(rt: Runtime, app: PandaApp) -> None:
    """Learn, before serving, what request code would otherwise read from the event loop.

    The ban list and whether the database has SKIP LOCKED are read here, in a thread; a
    database that does not answer now only leaves them to be read later in the background.
    With ``db_pool_preopen`` the connections of the worker's database threads are opened here
    too (client-server databases; SQLite opens a file).
    """

    def read() -> None:
        try:
            if rt.settings.db_pool_preopen and rt.backend != "sqlite":
                open_pool(rt.engine, rt.settings.request_threads)
            rt.skip_locked  # noqa: B018 - the property connects once and remembers
            if app.auth.bans is not None:
                app.auth.bans.load()
        except Exception as exc:  # noqa: BLE001 - serving starts anyway; requests get 503s
            log.warning("database not ready at worker start: %s", exc)

    if app.auth.verifier is not None:
        app.auth.verifier.prefetch()
    await to_thread.run_sync(read)


def _freeze_startup_objects() -> None:
    """Leave what the worker built to start (modules, the schema, compiled statements, the app)
    out of the garbage collector's full passes.

    Those are hundreds of thousands of objects that live as long as the process; every full
    collection walked them all again, a pause of tens of milliseconds in the middle of requests
    (the tail of the latency at a steady getJob rate, benchmarks/README.md). Objects made while
    serving are collected as before.
    """
    gc.collect()
    gc.freeze()


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before the request threads start.

    glibc gives threads up to 8 arenas per core; with a pool of request threads each arena keeps
    its own free memory, and a worker's RSS crept up by some 50 MB a minute under load without
    levelling off (benchmarks/README.md, soak). Two arenas keep it flat at no measurable cost.
    An explicit ``MALLOC_ARENA_MAX`` in the environment wins.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_worker(
    slot: int,
    settings: Settings,
    stats: SharedStats,
    http_sock: socket.socket,
    https_sock: socket.socket | None,
) -> None:
    """Entry point in the forked child; returns when the worker has stopped."""
    _limit_malloc_arenas()
    stats.bind(slot)
    stats.reset_slot(slot)
    log.info("worker %d serving", slot)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux; asyncio's loop also works
        asyncio.run(_serve(settings, stats, http_sock, https_sock))
    else:
        uvloop.run(_serve(settings, stats, http_sock, https_sock))
