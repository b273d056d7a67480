"""Running the asynchronous requests addressed to this machine (the daemon's part).

Each pass: the machine's heartbeat, recovery of runs that died, then every request this
machine should answer is claimed and run. ``grep`` searches one of the server's own log files
(``panda-*.log`` or ``panda-*.gz`` in ``log_dir``) with ``grep -E`` (``zgrep`` for compressed
logs) in a subprocess with a time limit; ``sleep_echo`` waits and echoes a message, a probe of
the machinery itself. The machine's service name is ``server``: every pandawms node runs the
same server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from pandawms.core.ops import async_requests as requests
from pandawms.core.runtime import Runtime

log = logging.getLogger("pandawms.async")

SERVICE = "server"
#: Longest a grep may run.
SUBPROCESS_TIMEOUT = 120
#: A claimed run older than this died with its daemon.
STALE_SECONDS = SUBPROCESS_TIMEOUT * 2

Outcome = tuple[str, str | None, str | None, str | None, int | None]


def _grep(rt: Runtime, parameters: dict[str, Any]) -> Outcome:
    log_dir = rt.settings.log_dir
    name = os.path.basename(str(parameters.get("log_filename", "")))
    if not log_dir:
        return "failed", None, "this server logs to stderr only (no log_dir)", None, None
    path = os.path.join(log_dir, name)
    tool = "zgrep" if name.endswith(".gz") else "grep"
    command = [tool, "-E", "-e", str(parameters.get("pattern", "")), "--", path]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
        )  # noqa: S603 - fixed tool, checked file name
    except subprocess.TimeoutExpired:
        return "failed", None, "timeout", None, None
    except OSError as exc:
        return "failed", None, str(exc), None, None
    return "done", proc.stdout, None, proc.stderr, proc.returncode


def _sleep_echo(rt: Runtime, parameters: dict[str, Any]) -> Outcome:
    seconds = min(max(int(parameters.get("seconds", 0)), 0), 60)
    time.sleep(seconds)
    return "done", f"{parameters.get('message', '')}\n", None, "", 0


HANDLERS: dict[str, Callable[[Runtime, dict[str, Any]], Outcome]] = {"grep": _grep, "sleep_echo": _sleep_echo}


def run_pending(rt: Runtime, service: str = SERVICE) -> int:
    """One pass for this machine; how many requests it ran."""
    machine = rt.node
    requests.heartbeat(rt, machine, service)
    requests.recover_stale(rt, machine, STALE_SECONDS)
    requests.recover_stale(rt, requests.ANY_MACHINE, STALE_SECONDS)
    ran = 0
    for row in requests.pending_for(rt, machine, service, sorted(HANDLERS)):
        handler = HANDLERS[row["request_type"]]
        result_machine = requests.ANY_MACHINE if row["machine_name"] == requests.ANY_MACHINE else machine
        if not requests.claim(rt, row["request_id"], result_machine):
            continue
        try:
            parameters = json.loads(row["parameters"])
            status, output, error, stderr, code = handler(rt, parameters)
        except Exception as exc:  # a broken request must not stop the others
            log.exception("async request %s failed", row["request_id"])
            status, output, error, stderr, code = "failed", None, f"{type(exc).__name__}: {exc}", None, None
        requests.finish(rt, row["request_id"], result_machine, status, output, error, stderr, code)
        ran += 1
    return ran
