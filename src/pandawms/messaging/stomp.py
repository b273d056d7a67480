"""A small STOMP 1.2 client: connect, send with receipts, disconnect.

The publisher only ever sends batches and must know they arrived, so all it needs is CONNECT,
SEND with a RECEIPT on the last frame, and DISCONNECT; a full client library with background
threads would add failure modes without adding anything here.
"""

from __future__ import annotations

import socket
import urllib.parse
from dataclasses import dataclass, field

from pandawms.config import mask_url


class StompError(RuntimeError):
    """The broker refused us or the connection broke."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace(":", "\\c")


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to connect: ``stomp://user:password@host:port/vhost``."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)  # kept out of logs and tracebacks
    vhost: str

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Read a ``stomp://`` URL; the path, if any, is the virtual host."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("stomp", "tcp"):
            raise StompError(f"broker URL must start with stomp://, got {mask_url(url)!r}")
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 61613,
            urllib.parse.unquote(parts.username or ""),
            urllib.parse.unquote(parts.password or ""),
            vhost,
        )


class StompConnection:
    """One connection to the broker, used for one batch and closed."""

    def __init__(self, address: BrokerAddress, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self._buffer = b""
        headers = {"accept-version": "1.2", "host": address.vhost, "heart-beat": "0,0"}
        if address.user:
            headers.update(login=address.user, passcode=address.password)
        self._send_frame("CONNECT", headers)
        command, reply_headers, body = self._read_frame()
        if command != "CONNECTED":
            raise StompError(
                f"broker refused the connection: {reply_headers.get('message', '')} {body[:200]!r}"
            )

    def _send_frame(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        lines = [command] + [f"{_escape(k)}:{_escape(v)}" for k, v in headers.items()]
        if body:
            lines.append(f"content-length:{len(body)}")
        self.sock.sendall(("\n".join(lines) + "\n\n").encode() + body + b"\0")

    def _read_frame(self) -> tuple[str, dict[str, str], bytes]:
        while True:
            stripped = self._buffer.lstrip(b"\r\n")  # heart-beat newlines between frames
            end = stripped.find(b"\0")
            if end >= 0:
                frame, self._buffer = stripped[:end], stripped[end + 1 :]
                head, _, body = frame.partition(b"\n\n")
                lines = head.decode().split("\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers.setdefault(key, value)
                return lines[0].strip(), headers, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise StompError("the broker closed the connection")
            self._buffer += chunk

    def send_batch(
        self, destination: str, bodies: list[bytes], content_type: str = "application/json"
    ) -> None:
        """Send every body; returns once the broker has acknowledged the whole batch."""
        for index, body in enumerate(bodies):
            headers = {"destination": destination, "content-type": content_type, "persistent": "true"}
            if index == len(bodies) - 1:
                headers["receipt"] = "batch-end"
            self._send_frame("SEND", headers, body)
        if not bodies:
            return
        command, headers, body = self._read_frame()
        if command == "ERROR":
            raise StompError(f"broker error: {headers.get('message', '')} {body[:200]!r}")
        if command != "RECEIPT" or headers.get("receipt-id") != "batch-end":
            raise StompError(f"unexpected reply {command} while waiting for the receipt")

    def close(self) -> None:
        """Disconnect politely, then close."""
        try:
            self._send_frame("DISCONNECT", {})
        except OSError:
            pass
        self.sock.close()
