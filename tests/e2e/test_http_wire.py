"""HTTP/1.1 on the wire, byte by byte, against a real server: whole answers in order.

A response's head waits for its body so both leave in one write (pandawms/httpd/protocol.py;
the last two tests count the writes a transport is asked for); the others check what that must
not break: HEAD answers (no body to wait for), ``Expect:
100-continue`` (the interim answer goes out before any body), pipelined requests, and
``Connection: close``.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

from pandawms.httpd.protocol import _JoinedWrites
from tests.conftest import ServerProcess


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_response(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> tuple[bytes, bytes]:
    """One response (head, body) from ``sock``; what follows stays in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if head_only or head.startswith(b"HTTP/1.1 100"):
        length = 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the whole body"
        rest += chunk
    buffer[:] = rest[length:]
    return head, rest[:length]


def test_get_answers_whole(sqlite_server: ServerProcess) -> None:
    with _connect(sqlite_server) as sock:
        sock.sendall(b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = _read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"success"' in body


def test_head_answers_without_body_and_the_connection_goes_on(sqlite_server: ServerProcess) -> None:
    with _connect(sqlite_server) as sock:
        buffer = bytearray()
        sock.sendall(b"HEAD /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = _read_response(sock, buffer, head_only=True)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = _read_response(sock, buffer)
    assert head.startswith(b"HTTP/1.1 200") and b'"success"' in body
    assert not buffer, "a HEAD answer carried a body"


def test_expect_100_continue_is_answered_before_the_body(sqlite_server: ServerProcess) -> None:
    body = b"job_ids=%5B1%5D"
    with _connect(sqlite_server) as sock:
        buffer = bytearray()
        sock.sendall(
            b"POST /api/v1/job/get_status HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        head, _ = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 100"), head
        sock.sendall(body)
        head, answer = _read_response(sock, buffer)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b'"success"' in answer


def test_pipelined_requests_are_answered_in_order(sqlite_server: ServerProcess) -> None:
    with _connect(sqlite_server) as sock:
        buffer = bytearray()
        sock.sendall(
            b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/v1/nosuch/method HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        statuses = [_read_response(sock, buffer)[0].split(b"\r\n")[0] for _ in range(3)]
    assert [s.split()[1] for s in statuses] == [b"200", b"404", b"200"]


def test_connection_close_ends_after_the_whole_answer(sqlite_server: ServerProcess) -> None:
    with _connect(sqlite_server) as sock:
        sock.sendall(b"GET /api/v1/system/is_alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b'"success"' in body


class _Recorder:
    """What a transport was asked to write, one entry per ``write`` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def _cycle(method: str) -> SimpleNamespace:
    return SimpleNamespace(response_started=False, scope={"method": method})


def test_head_and_body_leave_in_one_write() -> None:
    transport, cycle = _Recorder(), _cycle("POST")
    joined = _JoinedWrites(transport, cycle)  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: at once
    cycle.response_started = True
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(transport.writes) == 1
    joined.write(b"ok")
    assert transport.writes == [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ]
    joined.write(b"more")  # later body pieces pass straight through
    assert transport.writes[-1] == b"more"


def test_a_head_without_body_is_not_kept() -> None:
    transport, cycle = _Recorder(), _cycle("HEAD")
    joined = _JoinedWrites(transport, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport2, cycle2 = _Recorder(), _cycle("GET")
    joined2 = _JoinedWrites(transport2, cycle2)  # type: ignore[arg-type]
    cycle2.response_started = True
    joined2.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    joined2.close()  # an answer that ended before its body: the head goes first
    assert transport2.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and transport2.closed
