"""A real ``pandawms httpd`` process for tests: notify socket, log dir, certificates."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.certs import Pki
from tests.conftest import free_port


class Httpd:
    """A running ``pandawms httpd`` with its own notify socket, log dir and certificates."""

    def __init__(self, tmp: Path, pki: Pki, workers: int = 2, **settings: str) -> None:
        self.port, self.https_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.https = f"https://localhost:{self.https_port}"
        self.log_dir = tmp / "log"
        self.drain = tmp / "drain"
        self.notify_path = tmp / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify_path),
            "PANDA_DB_URL": f"sqlite:///{tmp / 'db.sqlite'}",
            "PANDA_PORT": str(self.port),
            "PANDA_HTTPS_PORT": str(self.https_port),
            "PANDA_WORKERS": str(workers),
            "PANDA_LOG_DIR": str(self.log_dir),
            "PANDA_TLS_CERT": str(pki.host_cert),
            "PANDA_TLS_KEY": str(pki.host_key),
            "PANDA_TLS_CA_DIR": str(pki.ca_dir),
            "PANDA_DRAIN_FILE": str(self.drain),
            "PANDA_STATUS_INTERVAL": "1",
            **{f"PANDA_{k.upper()}": v for k, v in settings.items()},
        }
        self.env = env
        subprocess.run(
            [sys.executable, "-m", "pandawms", "db", "init"], env=env, check=True, capture_output=True
        )
        self.stderr = tmp / "stderr.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pandawms", "httpd"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr, "wb"),
        )  # noqa: SIM115
        self.messages: list[str] = []
        self.wait_for(lambda m: m.startswith("READY=1"), 30)

    def read_notify(self) -> None:
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return

    def wait_for(self, predicate, timeout: float) -> str:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read_notify()
            for message in self.messages:
                if predicate(message):
                    return message
            if self.proc.poll() is not None:
                raise AssertionError(f"httpd exited: {self.stderr.read_text()}")
        raise AssertionError(f"no matching notify message in {self.messages[-5:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            # Keep reading the notify socket: with its queue full (a long test reads none of the
            # status lines) the master blocks in sd_notify and cannot even see the SIGTERM.
            deadline = time.monotonic() + 30
            while self.proc.poll() is None and time.monotonic() < deadline:
                self.read_notify()
            self.proc.wait(timeout=1)
        self.notify.close()
