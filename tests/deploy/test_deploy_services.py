"""What the rendered units and logrotate file rely on, shown with the real processes.

systemd is not PID 1 here, so the units cannot be started; instead the services are run the way
the units run them (``Type=notify`` with a notify socket) and the rendered logrotate file rotates
a running httpd's logs with the real logrotate, its systemctl reload swapped for the SIGHUP that
``ExecReload`` sends.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.certs import make_pki
from tests.e2e.httpd_proc import Httpd

pytestmark = pytest.mark.e2e


def test_daemon_service_reports_ready_as_type_notify_needs(tmp_path: Path) -> None:
    """panda_daemon.service is Type=notify: the daemon must send READY=1 from its main process."""
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(0.5)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify_path),
            "PANDA_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "PANDA_LOG_DIR": str(tmp_path / "log"),
        }
        subprocess.run(
            [sys.executable, "-m", "pandawms", "db", "init"], env=env, check=True, capture_output=True
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "pandawms", "daemon"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            messages: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in messages):
                try:
                    messages.append(notify.recv(4096).decode())
                except TimeoutError:
                    assert proc.poll() is None, "the daemon exited before it was ready"
            assert any(m.startswith("READY=1") for m in messages), messages
            proc.send_signal(signal.SIGTERM)  # what systemctl stop sends (KillMode=mixed)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_rendered_logrotate_rotates_a_running_httpd_without_restart(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "node").mkdir()
    node = Httpd(tmp_path / "node", pki, workers=1)
    try:
        httpx.get(node.base + "/api/v1/system/is_alive?before")
        access = node.log_dir / "panda-httpd-access.log"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (access.exists() and access.stat().st_size):
            time.sleep(0.1)
        user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
        out = tmp_path / "out"
        subprocess.run(
            [sys.executable, "-m", "pandawms", "deploy", "render", "--dest", str(out)]
            + ["--user", user, "--group", group, "--log-dir", str(node.log_dir)],
            check=True,
            capture_output=True,
        )
        conf = (out / "panda.logrotate").read_text()
        head, _, rest = conf.partition("    postrotate\n")
        script, _, tail = rest.partition("    endscript\n")
        assert "/usr/bin/systemctl reload" in script
        # The one change: no systemd here, so signal the master directly, as ExecReload would.
        conf = f"{head}    postrotate\n        kill -HUP {node.proc.pid}\n    endscript\n{tail}"
        (out / "panda.logrotate").write_text(conf)
        result = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "state"), str(out / "panda.logrotate")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rotated = sorted(p.name for p in node.log_dir.glob("panda-httpd-access.log-*"))
        assert len(rotated) == 1, sorted(os.listdir(node.log_dir))
        pid_before = node.proc.pid

        def served_after(path: Path) -> bool:
            httpx.get(node.base + "/api/v1/system/is_alive")
            return path.exists() and "is_alive" in path.read_text()

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not served_after(access):
            time.sleep(0.2)
        assert served_after(access), "the worker did not reopen its access log"
        assert node.proc.poll() is None and node.proc.pid == pid_before  # reopened, not restarted
        old = (node.log_dir / rotated[0]).read_text()
        assert "is_alive" in old
        assert access.read_text().count("is_alive") >= 1
    finally:
        node.stop()
