"""Process limits the httpd needs: enough file descriptors for its connections."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("pandawms.httpd")

#: Ceiling used when the hard limit is unlimited (the kernel's nr_open is usually 1,048,576).
_MOST = 1 << 20
#: Descriptors kept back per worker for the database pool, log files, the listening sockets...
RESERVED_FDS = 128


def raise_nofile_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the soft limit now in force.

    Linux starts most processes at a soft limit of 1,024 descriptors whatever the hard limit
    (systemd's LimitNOFILE sets both); a worker holding a connection per descriptor hit it at
    about a thousand clients and then served nobody.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MOST if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return _MOST if soft == resource.RLIM_INFINITY else soft


def connection_cap(configured: int, db_connections: int) -> int:
    """``max_connections`` for one worker, kept below what its descriptor limit allows."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = (_MOST if soft == resource.RLIM_INFINITY else soft) - RESERVED_FDS - db_connections
    return max(16, min(configured, room))
