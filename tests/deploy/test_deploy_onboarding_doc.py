"""Every ``sh`` block of docs/node-onboarding.md runs, here, with the node's paths moved to a temp dir.

Blocks marked ``sh root`` need root, systemd as PID 1 or the network and are not run; the page
says so. The substitutions below are the only difference from what an operator types.
"""

from __future__ import annotations

import getpass
import grp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.certs import make_pki

DOC = Path(__file__).resolve().parents[2] / "docs" / "node-onboarding.md"
VENV = sys.prefix


def doc_commands(text: str) -> tuple[list[str], list[str]]:
    """(commands of ``sh`` blocks, commands of ``sh root`` blocks), continuation lines joined."""
    runnable: list[str] = []
    root: list[str] = []
    for info, body in re.findall(r"^```(sh(?: root)?)\n(.*?)^```", text, flags=re.S | re.M):
        target = root if info == "sh root" else runnable
        pending = ""
        for line in body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                target.append(command)
    return runnable, root


def test_every_runnable_command_of_the_onboarding_page_runs(tmp_path: Path) -> None:
    runnable, root = doc_commands(DOC.read_text())
    programs = {c.split()[0].rsplit("/", 1)[-1] for c in runnable}
    assert {"pandawms", "systemd-analyze", "logrotate", "haproxy", "squid", "openssl"} <= programs, programs
    assert any("systemctl start panda.service" in c for c in root)
    make_pki(tmp_path / "grid-security")
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    substitutions = [
        (
            "--db-url postgresql://panda@dbhost.example.org:5432/panda",
            f"--db-url sqlite:///{tmp_path}/panda.sqlite --db-password-file ''",
        ),
        ("--user atlpan", f"--user {user} --group {group} --grid-security {tmp_path}/grid-security"),
        ("/opt/panda/etc/panda/deploy", str(tmp_path / "deploy")),
        ("/opt/panda", VENV),
        ("/etc/grid-security", str(tmp_path / "grid-security")),
    ]
    outputs = []
    skipped = []
    for command in runnable:
        for old, new in substitutions:
            command = command.replace(old, new)
        program = command.split()[0]
        if shutil.which(program) is None:
            skipped.append(program)  # e.g. squid or haproxy not installed on this machine
            continue
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    assert "DB schema check: OK" in text
    assert "config OK: database sqlite:///" in text
    assert "\ndb_password = \n" in text  # config show: no password for SQLite
    if "haproxy" not in skipped:
        assert "Configuration file is valid" in text
    assert (tmp_path / "deploy" / "panda.service").exists()
