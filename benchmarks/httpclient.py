"""A lean asyncio HTTP/1.1 client for load generation: keep-alive, Content-Length or chunked bodies.

Python HTTP client libraries spend more CPU per request than the server under test; on a
2-core machine that would measure the client. This one does the minimum: one connection per
simulated pilot, requests written in one syscall, responses read by Content-Length.
"""

from __future__ import annotations

import asyncio
import urllib.parse


class Connection:
    """One keep-alive connection to the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "",
        accept_json: bool = True,
        headers: tuple[str, ...] = (),
    ) -> tuple[int, bytes]:
        """Send one request and return (status, body); reconnects once if the server closed."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
            if accept_json:
                head.append("Accept: application/json")
            if body or method == "POST":
                head.append(f"Content-Length: {len(body)}")
                if content_type:
                    head.append(f"Content-Type: {content_type}")
            head.extend(headers)
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            try:
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError
                status = int(status_line.split()[1])
                length = 0
                chunked = close = False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    lname = name.strip().lower()
                    if lname == "content-length":
                        length = int(value)
                    elif lname == "connection" and value.strip().lower() == "close":
                        close = True
                    elif lname == "transfer-encoding" and value.strip().lower() == "chunked":
                        chunked = True  # Apache + mod_wsgi, for an answer without a length
                if chunked:
                    data = await self._read_chunked()
                else:
                    data = await self.reader.readexactly(length) if length else b""
                if close:
                    await self.close()
                return status, data
            except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _read_chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def form(fields: dict[str, object]) -> bytes:
    """application/x-www-form-urlencoded body, as the pilot sends."""
    return urllib.parse.urlencode({k: str(v) for k, v in fields.items()}).encode()
