"""uvicorn's HTTP protocol, extended with the client certificate and with connection limits.

ASGI servers do not pass client certificates to applications; this subclass reads the
verified peer certificate once per connection and puts the caller's DN in the request scope
(``scope["extensions"]["tls"]``), which :mod:`pandawms.api.auth` reads. It builds on uvicorn's
httptools protocol (a C parser) when httptools is installed, and on h11 otherwise.

uvicorn closes a keep-alive connection that stays idle after a response, but nothing else: a
connection that never sends a byte, or sends its headers one byte a minute (slowloris), or
stops in the middle of its body, stays open for good. Enough of them use up the worker's file
descriptors and it serves nobody. So every connection here also has

* a header deadline (``http_header_timeout``): from the connection (or the first byte of the
  next request on a kept-alive connection) until the end of the request headers;
* a body deadline (``http_body_timeout``): from the end of the headers until the whole body
  has arrived;
* a place in the worker's :class:`ConnectionTable`, which holds at most ``max_connections``.
  When it is full, a new connection first pushes out the connection that has waited longest
  without a request in progress (silent, half-sent headers or idle keep-alive); only when every
  connection is busy with a request is the newcomer told 503 and closed. Clients sending whole
  requests are therefore still served while thousands of idle sockets are thrown at a worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pandawms.httpd.tls import client_identity, with_client_identity

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is a dependency, h11 is the fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

log = logging.getLogger("pandawms.httpd")


def _plain_reply(status: bytes, text: bytes, *extra: bytes) -> bytes:
    """A whole HTTP/1.1 reply that closes the connection, written before any request is parsed."""
    head = [b"HTTP/1.1 " + status, b"content-type: text/plain", b"content-length: %d" % len(text)]
    return b"\r\n".join([*head, *extra, b"connection: close", b"", text])


_TIMEOUT_408 = _plain_reply(b"408 Request Timeout", b"ERROR : request timeout\n")


class _JoinedWrites:
    """A connection's transport as one request's cycle sees it: the response head waits for the
    first piece of the body, so a whole response leaves in one write.

    uvicorn writes the status line and headers, then the body: two ``send(2)`` calls and two TCP
    segments for every small answer (a heartbeat's is some 60 bytes). Those two writes were a
    tenth of a worker's Python time under a heartbeat load (py-spy, benchmarks/README.md). The
    head of a HEAD request, and anything written before the response starts (``100 Continue``),
    goes out at once; a close sends a waiting head first.
    """

    __slots__ = ("_transport", "_cycle", "_head", "_head_seen")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        cycle = self._cycle
        if not self._head_seen and cycle.response_started and cycle.scope.get("method") != "HEAD":
            self._head_seen = True
            self._head = bytes(data)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send a head still waiting (a response that ended without a body write)."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass
class ConnectionTable:
    """Every open connection of one worker (its HTTP and HTTPS servers), oldest idle first."""

    limit: int
    retry_after: int = 5
    open: set[Any] = field(default_factory=set)
    #: Connections without a request in progress, in the order they became idle.
    idle: dict[Any, None] = field(default_factory=dict)
    evicted: int = 0
    refused: int = 0
    _logged: float = 0.0

    def admit(self, conn: Any) -> bool:
        """Take ``conn`` in, pushing out the longest-idle connection when full; False: refuse it."""
        if len(self.open) >= self.limit:
            victim = next(iter(self.idle), None)
            if victim is None:
                self.refused += 1
                self._report()
                return False
            self.gone(victim)
            victim.close_idle()
            self.evicted += 1
            self._report()
        self.open.add(conn)
        self.idle[conn] = None
        return True

    def busy(self, conn: Any) -> None:
        """``conn`` has a request in progress: not to be pushed out."""
        self.idle.pop(conn, None)

    def idle_again(self, conn: Any) -> None:
        """``conn`` finished its request and waits for the next (it goes to the end of the line)."""
        if conn in self.open:
            self.idle.pop(conn, None)
            self.idle[conn] = None

    def gone(self, conn: Any) -> None:
        """``conn`` is closed."""
        self.open.discard(conn)
        self.idle.pop(conn, None)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._logged >= 10:
            self._logged = now
            log.warning(
                "connection limit %d reached: %d idle connections closed, %d new ones refused so far",
                self.limit,
                self.evicted,
                self.refused,
            )


class TLSIdentityProtocol(_Base):
    """uvicorn's HTTP protocol that exposes the client certificate's DN to the app.

    The limits are class attributes, set by :func:`limited_protocol` for a worker; without them
    (tests that build a bare server) connections are not limited.
    """

    table: ClassVar[ConnectionTable | None] = None
    header_timeout: ClassVar[float] = 0.0
    body_timeout: ClassVar[float] = 0.0

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _in_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            identity: dict[str, Any] | None
            try:
                identity = client_identity(ssl_object)
            except ValueError:
                identity = None
            self.app = with_client_identity(self.app, identity)
        if self.table is not None and not self.table.admit(self):
            retry = b"retry-after: %d" % self.table.retry_after
            transport.write(
                _plain_reply(b"503 Service Unavailable", b"ERROR : too many connections\n", retry)
            )
            transport.close()
            return
        self._start_header_timer()

    # --- deadlines --------------------------------------------------------------------------

    def _start_header_timer(self) -> None:
        if self.header_timeout > 0 and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out, "headers")

    def _cancel(self, which: str) -> None:
        timer = getattr(self, which)
        if timer is not None:
            timer.cancel()
            setattr(self, which, None)

    def _timed_out(self, what: str) -> None:
        self._header_timer = self._body_timer = None
        if self.transport.is_closing():
            return
        log.info("closing a connection from %s: its request %s did not arrive in time", self.client, what)
        if what == "headers" and not self._in_request:
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def close_idle(self) -> None:
        """Pushed out by a newer connection (the table is full)."""
        self._cancel("_header_timer")
        if not self.transport.is_closing():
            self.transport.close()

    # --- uvicorn's protocol callbacks ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_request and not self.transport.is_closing():
            # Bytes of a next request (or stray bytes the parser keeps): its headers have a deadline.
            self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel("_header_timer")
        self._in_request = True
        if self.table is not None:
            self.table.busy(self)
        if self.body_timeout > 0:
            self._body_timer = self.loop.call_later(self.body_timeout, self._timed_out, "body")
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_started and cycle.transport is self.transport:
            cycle.transport = _JoinedWrites(self.transport, cycle)

    def on_message_complete(self) -> None:
        self._cancel("_body_timer")
        super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = getattr(self, "cycle", None)
        if cycle is not None and isinstance(cycle.transport, _JoinedWrites):
            cycle.transport.flush()
        super().on_response_complete()
        if self.transport.is_closing() or getattr(self, "pipeline", None):
            return
        self._in_request = False
        if self.table is not None:
            self.table.idle_again(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel("_header_timer")
        self._cancel("_body_timer")
        if self.table is not None:
            self.table.gone(self)
        super().connection_lost(exc)


def limited_protocol(
    max_connections: int, header_timeout: float, body_timeout: float, retry_after: int = 5
) -> type[TLSIdentityProtocol]:
    """The protocol class for one worker: one connection table shared by its HTTP and HTTPS servers."""
    # The deadlines hang on httptools' parser callbacks; h11's protocol has other ones.
    parser_callbacks = hasattr(_Base, "on_headers_complete")
    attrs = {
        "table": ConnectionTable(max_connections, retry_after),
        "header_timeout": float(header_timeout) if parser_callbacks else 0.0,
        "body_timeout": float(body_timeout) if parser_callbacks else 0.0,
    }
    return type("LimitedTLSIdentityProtocol", (TLSIdentityProtocol,), attrs)
