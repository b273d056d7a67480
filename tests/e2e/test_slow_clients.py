"""Idle, slow and half-sent connections are closed; a crowd of them does not stop service.

The real httpd runs with one worker, short deadlines and a small connection table, so the
behaviours show within seconds: a silent socket and a slowloris get a 408 and are closed after
the header deadline, a stalled body is closed after the body deadline, and while hundreds of
silent sockets are open the worker still answers ``is_alive`` (the longest idle ones are pushed
out to make room). Bounds are generous: the box running the tests is slow and shared.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.certs import Pki, make_pki
from tests.e2e.httpd_proc import Httpd

HEADER_S = 2
BODY_S = 3
CAP = 64


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def httpd(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    server = Httpd(
        tmp_path,
        pki,
        workers=1,
        http_header_timeout=str(HEADER_S),
        http_body_timeout=str(BODY_S),
        max_connections=str(CAP),
    )
    yield server
    server.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def _closed(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset); reads and drops what it sent."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_closed(socks: list[socket.socket], timeout: float, drip: socket.socket | None = None) -> float:
    """Seconds until every socket in ``socks`` is closed by the server (fails after ``timeout``).

    ``drip``, if given, is sent one header byte every half second meanwhile (a slowloris).
    """
    started = time.monotonic()
    pending = list(socks)
    while pending:
        elapsed = time.monotonic() - started
        assert elapsed < timeout, (
            f"{len(pending)} of {len(socks)} connections still open after {elapsed:.1f} s"
        )
        if drip is not None and drip in pending:
            try:
                drip.send(b"a")
            except OSError:
                pass
        select.select(pending, [], [], 0.5)
        pending = [s for s in pending if not _closed(s)]
    return time.monotonic() - started


def _alive(base: str) -> None:
    reply = httpx.get(base + "/api/v1/system/is_alive", timeout=15)
    assert reply.status_code == 200 and reply.json()["success"] is True, reply.text


def test_silent_and_slowloris_connections_get_408_and_close(httpd: Httpd) -> None:
    silent = [_connect(httpd.port) for _ in range(3)]
    loris = _connect(httpd.port)
    loris.send(b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    first = b""
    took = _wait_closed([*silent, loris], timeout=HEADER_S + 20, drip=loris)
    assert took >= HEADER_S * 0.5, f"closed after {took:.1f} s, before the header deadline"
    for sock in silent:
        sock.close()
    loris.close()
    # A keep-alive client that starts its next request and stops is cut the same way.
    sock = socket.create_connection(("127.0.0.1", httpd.port), timeout=15)
    sock.sendall(b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n")
    while b"\r\n\r\n" not in first:
        first += sock.recv(4096)
    assert first.startswith(b"HTTP/1.1 200"), first
    sock.sendall(b"GET / HTTP/1.1\r\nHo")
    sock.setblocking(False)
    _wait_closed([sock], timeout=HEADER_S + 20)
    sock.close()
    _alive(httpd.base)


def test_stalled_body_is_closed(httpd: Httpd) -> None:
    sock = _connect(httpd.port)
    sock.send(
        b"POST /api/v1/job/get_status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"job_ids": '
    )
    took = _wait_closed([sock], timeout=BODY_S + 20)
    assert took >= BODY_S * 0.5, f"closed after {took:.1f} s, before the body deadline"
    sock.close()
    _alive(httpd.base)


def test_hundreds_of_idle_sockets_do_not_stop_service(httpd: Httpd) -> None:
    crowd = [_connect(httpd.port) for _ in range(300)]
    try:
        for _ in range(5):
            _alive(httpd.base)
        # The table holds CAP connections: most of the crowd was pushed out already.
        pushed_out = sum(_closed(s) for s in crowd)
        assert pushed_out >= 300 - CAP - 10, f"only {pushed_out} idle connections were closed"
        # The rest go at the header deadline.
        _wait_closed(crowd, timeout=HEADER_S + 30)
        _alive(httpd.base)
    finally:
        for sock in crowd:
            sock.close()
