"""``pandawms deploy render``: the files it writes are accepted by the real systemd, logrotate,
haproxy and squid, and the env file loads with the server's own settings loader."""

from __future__ import annotations

import dataclasses
import getpass
import grp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pandawms.config import Settings, load_settings, parse_env_file

VENV = sys.prefix  # the virtualenv the tests run in: its bin/pandawms exists, as systemd checks


def _render(dest: Path, *extra: str) -> dict[str, str]:
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    out = subprocess.run(
        [sys.executable, "-m", "pandawms", "deploy", "render", "--venv", VENV, "--user", user]
        + ["--group", group, "--dest", str(dest), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return {p.name: p.read_text() for p in dest.iterdir()}


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


def test_units_are_wired_as_parent_and_children(tmp_path: Path) -> None:
    files = _render(tmp_path / "out")
    assert set(files) == {
        "panda.service",
        "panda_httpd.service",
        "panda_daemon.service",
        "panda_server_env",
        "panda.logrotate",
        "haproxy.cfg",
        "squid.conf",
    }
    # The env file may name secrets: readable by the service's group, not by everyone.
    modes = {name: (tmp_path / "out" / name).stat().st_mode & 0o777 for name in files}
    assert modes.pop("panda_server_env") == 0o640
    assert set(modes.values()) == {0o644}
    parent = _lines(files["panda.service"])
    assert {"Type=oneshot", "RemainAfterExit=yes", f"ExecStartPre={VENV}/bin/pandawms db check"} <= parent
    assert "Wants=network-online.target panda_httpd.service panda_daemon.service" in parent
    assert "EnvironmentFile=/etc/sysconfig/panda_server_env" in parent
    httpd = _lines(files["panda_httpd.service"])
    assert {"Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID"} <= httpd
    assert f"ExecStart={VENV}/bin/pandawms httpd" in httpd
    daemon = _lines(files["panda_daemon.service"])
    assert {"Restart=on-failure", f"ExecStart={VENV}/bin/pandawms daemon"} <= daemon
    for child in (httpd, daemon):
        # thousands of connections (httpd) and pooled sessions need more than 1,024 descriptors
        assert "LimitNOFILE=65536" in child
        # stop/restart of the parent reaches the child; the child never runs without the check
        assert {"PartOf=panda.service", "Requires=panda.service", "WantedBy=panda.service"} <= child
        assert any(line.startswith("After=panda.service") for line in child)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    _render(out_dir)
    units = [str(out_dir / name) for name in ("panda.service", "panda_httpd.service", "panda_daemon.service")]
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: any output is a defect
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit pointing at a missing venv is refused."""
    out_dir = tmp_path / "out"
    _render(out_dir, "--venv", str(tmp_path / "no-such-venv"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(out_dir / "panda_httpd.service"), str(out_dir / "panda.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "is not executable" in result.stderr


def test_env_file_documents_every_setting_and_loads(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("Tr0ub4dor&3\n")
    secret.chmod(0o400)
    files = _render(
        tmp_path / "out",
        "--db-url",
        "postgresql://panda@db.example.org:5432/panda",
        "--db-password-file",
        str(secret),
        "--trusted-proxies",
        "10.0.0.5,10.0.0.6",
    )
    text = files["panda_server_env"]
    for field in dataclasses.fields(Settings):
        key = "PANDA_" + field.name.upper()
        assert f"{key}=" in text or f"{key}_FILE=" in text, f"{key} is not in the env file"
    env = parse_env_file(text)
    assert env["VIRTUAL_ENV"] == VENV and env["PATH"].startswith(VENV + "/bin:")
    settings = load_settings(None, environ=env)
    assert settings.host == "0.0.0.0" and settings.log_dir == "/var/log/panda"
    assert settings.tls_cert == "/etc/grid-security/hostcert.pem"
    assert settings.tls_ca_dir == "/etc/grid-security/certificates"
    assert settings.auth_mode == "strict" and settings.schema_check == "fail"
    assert settings.trusted_proxies == "10.0.0.5,10.0.0.6"
    assert settings.drain_file == "/etc/iss.nologin"
    assert settings.effective_db_url == "postgresql://panda:Tr0ub4dor%263@db.example.org:5432/panda"
    assert settings.masked_db_url == "postgresql://panda:***@db.example.org:5432/panda"
    assert "Tr0ub4dor" not in repr(settings) and "Tr0ub4dor" not in text
    # every commented default is a value the loader accepts
    defaults = {
        line[1:].split("=", 1)[0]: line[1:].split("=", 1)[1]
        for line in text.splitlines()
        if line.startswith("#PANDA_") and not line.startswith("#PANDA_DB_PASSWORD")
    }
    accepted = {
        k: v for k, v in defaults.items() if not k.endswith("_FILE") and v != "(depends on where it runs)"
    }
    load_settings(None, environ={**env, **accepted})


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_accepts_the_file_and_signals_instead_of_restarting(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "panda-httpd.log").write_text("a line\n")
    files = _render(tmp_path / "out", "--log-dir", str(log_dir))
    conf = files["panda.logrotate"]
    directives = [line.strip() for line in conf.splitlines() if not line.strip().startswith("#")]
    assert "copytruncate" not in directives and not any("restart" in d for d in directives)
    assert "/usr/bin/systemctl reload" in conf
    result = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "state"), str(tmp_path / "out" / "panda.logrotate")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    assert f"considering log {log_dir}/panda-httpd.log" in output


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_rendered_haproxy_config_is_valid(tmp_path: Path) -> None:
    for mode in ("passthrough", "terminate"):
        out_dir = tmp_path / mode
        _render(
            out_dir, "--nodes", "node1.example.org:25080,node2.example.org:25080:25443", "--tls-mode", mode
        )
        cfg = (out_dir / "haproxy.cfg").read_text()
        if mode == "terminate":  # haproxy -c opens the certificate files: point them at real ones
            from tests.certs import make_pki

            pki = make_pki(tmp_path / "pki")
            pem = tmp_path / "host.pem"
            pem.write_bytes(pki.host_cert.read_bytes() + pki.host_key.read_bytes())
            ca = pki.ca_dir / "pandawms-test-ca.pem"
            cfg = cfg.replace("/etc/haproxy/hostcert_and_key.pem", str(pem)).replace(
                "/etc/haproxy/ca-bundle.pem", str(ca)
            )
            (out_dir / "haproxy.cfg").write_text(cfg)
        result = subprocess.run(
            ["haproxy", "-c", "-f", str(out_dir / "haproxy.cfg")], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "check port 25080" in cfg or mode == "terminate"
        assert "http-request del-header X-SSL-Client-S-DN" in cfg


@pytest.mark.skipif(shutil.which("squid") is None, reason="squid is not installed")
def test_rendered_squid_config_parses(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    _render(out_dir, "--squid-log-dir", str(tmp_path), "--squid-pid-file", str(tmp_path / "squid.pid"))
    result = subprocess.run(
        ["squid", "-k", "parse", "-f", str(out_dir / "squid.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output and "ERROR" not in output, output
