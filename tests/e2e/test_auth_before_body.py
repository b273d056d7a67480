"""A caller who may not call a method is refused before its request body is read.

In strict mode an anonymous client posting megabytes gets its 401 as soon as its headers are
in, without the server waiting for, buffering or parsing the body, and the connection is
closed rather than drained. Two such clients sending whole 15 MiB bodies leave the worker's
memory about where it was (bound generous: the body is many small JSON objects, which parsed
would take hundreds of MiB).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import ServerProcess

BIG = 15 * 1024 * 1024


def _reply_without_body(port: int, path: str, content_type: str) -> bytes:
    """Send headers announcing BIG bytes and a few of them; return what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {BIG}\r\nAccept: application/json\r\n\r\n".encode()
            + b'{"jobs": [{"a": 1}, '
        )
        reply = b""
        while True:  # until the server closes: it must not wait for the rest of the body
            data = sock.recv(65536)
            if not data:
                return reply
            reply += data


def _worker_pids(master: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children = (task / "children").read_text().split()
        pids.extend(int(pid) for pid in children)
    return pids


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_anonymous_big_body_is_refused_before_reading(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'strict.sqlite'}", {"PANDA_AUTH_MODE": "strict"})
    started = time.monotonic()
    v1 = _reply_without_body(server.port, "/api/v1/job/submit", "application/json")
    assert v1.startswith(b"HTTP/1.1 401"), v1[:200]
    assert b"connection: close" in v1.lower()
    legacy = _reply_without_body(server.port, "/server/panda/updateJob", "application/json")
    assert legacy.startswith(b"HTTP/1.1 401"), legacy[:200]
    assert time.monotonic() - started < 30

    body = b'{"jobs": [' + b",".join([b'{"a": 1}'] * (BIG // 9)) + b"]}"
    workers = _worker_pids(server.proc.pid)
    assert workers, "no httpd worker found"
    before = {pid: _rss_mib(pid) for pid in workers}
    replies: list[int] = []

    def post() -> None:
        try:
            reply = httpx.post(
                server.base + "/api/v1/job/submit",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            replies.append(reply.status_code)
        except httpx.HTTPError:
            replies.append(-1)  # the server may close while the client is still sending

    clients = [threading.Thread(target=post) for _ in range(4)]
    for client in clients:
        client.start()
    while any(c.is_alive() for c in clients):
        alive = httpx.get(server.base + "/api/v1/system/is_alive", timeout=30)
        assert alive.status_code == 200
        time.sleep(0.2)
    assert all(status in (401, -1) for status in replies), replies
    grown = max(_rss_mib(pid) - before[pid] for pid in workers if os.path.exists(f"/proc/{pid}"))
    print(f"largest worker growth on refused anonymous bodies: {grown:.0f} MiB")
    assert grown < 150, f"a worker grew by {grown:.0f} MiB on refused anonymous bodies"
