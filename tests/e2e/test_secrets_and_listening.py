"""A database password in the URL is masked wherever it is written; open mode stays on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from pandawms.core.runtime import Runtime
from tests.certs import make_pki
from tests.conftest import free_port
from tests.dbs import BACKENDS
from tests.e2e.httpd_proc import Httpd

SECRET = "Xk9-query-secret"


def _run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pandawms", *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_masking_for_every_way_a_password_sits_in_a_url() -> None:
    from pandawms.config import mask_secrets, mask_url

    assert mask_url(f"postgresql://u@h/db?password={SECRET}&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert (
        mask_url(f"postgresql://u:{SECRET}@h:5432/db?PASSWORD={SECRET}")
        == "postgresql://u:***@h:5432/db?PASSWORD=***"
    )
    assert mask_url(f"notaurl:{SECRET}") == "notaurl:*** (not a URL)"
    assert mask_url(SECRET) == "*** (not a URL)"
    assert mask_url("sqlite:////var/lib/panda/db.sqlite") == "sqlite:////var/lib/panda/db.sqlite"
    text = f"failed: postgresql://u:{SECRET}@h/db and dsn 'host=h password={SECRET} user=u'"
    assert SECRET not in mask_secrets(text) and "postgresql://u:***@h/db" in mask_secrets(text)


def test_malformed_database_urls_are_named_without_their_password(tmp_path: Path) -> None:
    for url in (
        f"postgresql://panda:{SECRET}@127.0.0.1:notaport/panda",
        f"notaurl:{SECRET}",
        f"postgresql://panda:{SECRET}@[::1/panda",
    ):
        for command in (("config", "check"), ("db", "check"), ("httpd",)):
            result = _run({"PANDA_DB_URL": url, "PANDA_DATA_DIR": str(tmp_path)}, *command)
            output = result.stdout + result.stderr
            assert result.returncode == 2, (url, command, output)
            assert "setting db_url is not a database URL" in output and "Traceback" not in output, output
            assert SECRET not in output, output


def test_a_password_in_the_url_query_is_masked_in_logs_pages_and_metrics(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    base = BACKENDS["postgresql"].require()
    make_runtime(base)  # the schema, every table empty
    # The test server trusts local connections, so any password is accepted.
    url = make_url(base).update_query_dict({"password": SECRET}).render_as_string(hide_password=False)
    assert SECRET in url
    server = Httpd(
        tmp_path, make_pki(tmp_path / "pki"), workers=1, db_url=url, data_dir=str(tmp_path / "data")
    )
    try:
        texts = [httpx.get(server.base + "/metrics").text]
        for page in ("/monitor/", "/monitor/?format=json", "/monitor/jobs", "/monitor/daemons"):
            reply = httpx.get(server.base + page)
            assert reply.status_code < 500, (page, reply.text[:300])
            texts.append(reply.text)
    finally:
        server.stop()
    env = {"PANDA_DB_URL": url, "PANDA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}
    for command in (("config", "check"), ("config", "show"), ("db", "check"), ("jobs",)):
        result = _run(env, *command)
        assert result.returncode == 0, (command, result.stderr)
        texts.append(result.stdout + result.stderr)
    assert "password=***" in texts[-4] and "password=***" in texts[-1], texts[-4:]
    texts += [path.read_text() for path in server.log_dir.iterdir()]
    assert any("password=***" in text for text in texts[-3:]), "the served database is logged, masked"
    for text in texts:
        assert SECRET not in text


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_open_mode_beyond_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    env = {"PANDA_DATA_DIR": str(tmp_path), "PANDA_PORT": str(free_port())}
    for host in ("0.0.0.0", "::", "192.0.2.10", "panda.example.org"):
        check = _run({**env, "PANDA_HOST": host}, "config", "check")
        assert check.returncode == 1 and "config OK" not in check.stdout, (host, check.stdout)
        assert "auth_mode is open" in check.stderr and "PANDA_ALLOW_OPEN_REMOTE=1" in check.stderr, (
            check.stderr
        )
    env["PANDA_HOST"] = "0.0.0.0"
    for command in (("serve",), ("httpd",)):
        started = _run(env, *command)
        assert started.returncode == 2 and "PANDA_ALLOW_OPEN_REMOTE=1" in started.stderr, started.stderr
        assert not _listening(int(env["PANDA_PORT"]))
    assert _run({**env, "PANDA_ALLOW_OPEN_REMOTE": "1"}, "config", "check").returncode == 0
    assert _run({**env, "PANDA_AUTH_MODE": "strict"}, "config", "check").returncode == 0
    for loopback in ("127.0.0.1", "localhost", "::1"):
        assert _run({**env, "PANDA_HOST": loopback}, "config", "check").returncode == 0
