"""systemd's notify protocol (sd_notify), without libsystemd: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket


def sd_notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1`` or ``STATUS=...``); False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # A reader that stops reading (the queue holds only net.unix.max_dgram_qlen datagrams)
            # must not stall the master: a status line is dropped after a moment instead.
            sock.settimeout(0.5)
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
