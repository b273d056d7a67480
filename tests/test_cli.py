"""The pandawms command: schema init/check/upgrade, config errors, serve's start-up check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from pandawms.config import ConfigError, load_settings
from pandawms.db.engine import make_engine
from pandawms.db.schema import CODE_SCHEMA_VERSION as CODE
from pandawms.db.schema import SCHEMA_COMPONENT, schema_version


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pandawms", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_db_check_init_upgrade(db_url: str, make_runtime) -> None:  # noqa: ANN001
    rt = make_runtime(db_url)  # schema exists and is current
    ok = _run("db", "check", "--db-url", db_url)
    assert ok.returncode == 0 and ok.stdout.strip() == f"DB schema check: OK, database {CODE}, code {CODE}"
    with rt.engine.begin() as conn:
        conn.execute(
            update(schema_version).where(schema_version.c.component == SCHEMA_COMPONENT).values(version=0)
        )
    old = _run("db", "check", "--db-url", db_url)
    assert old.returncode == 1
    assert f"FAILED, database 0 is older than code {CODE}" in old.stdout
    assert _run("db", "check", "--db-url", db_url, env={"PANDA_SCHEMA_CHECK": "warn"}).returncode == 0
    upgraded = _run("db", "upgrade", "--db-url", db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from version 0 to {CODE}" in upgraded.stdout
    assert _run("db", "check", "--db-url", db_url).returncode == 0


def test_empty_database_check_and_init(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    empty = _run("db", "check", "--db-url", url)
    assert empty.returncode == 1 and "no pandawms schema" in empty.stdout
    assert _run("db", "init", "--db-url", url).stdout.strip() == f"created schema version {CODE}"
    assert "already initialised" in _run("db", "init", "--db-url", url).stdout


def test_serve_refuses_an_old_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _run("db", "init", "--db-url", url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(update(schema_version).values(version=0))
    engine.dispose()
    proc = _run("serve", "--db-url", url, "--port", "1")
    assert proc.returncode == 3
    assert "DB schema check: FAILED" in proc.stderr


def test_bad_settings_are_named(tmp_path: Path) -> None:
    proc = _run("serve", env={"PANDA_PORT": "eighty"})
    assert proc.returncode == 2
    assert "setting port (env PANDA_PORT) must be an integer, got 'eighty'" in proc.stderr
    ini = tmp_path / "panda.cfg"
    ini.write_text("[server]\nschema_check = sometimes\n")
    with pytest.raises(ConfigError, match="schema_check .* must be one of fail, warn"):
        load_settings(str(ini))
    ini.write_text("[server]\nno_such_knob = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'no_such_knob'"):
        load_settings(str(ini))
    ini.write_text("[server]\nport = 26000\nauth_mode = strict\n")
    settings = load_settings(str(ini))
    assert settings.port == 26000 and settings.auth_mode == "strict"
    assert load_settings(str(ini), {"port": 27000}).port == 27000


def test_slots_set_list_and_remove(sqlite_rt) -> None:  # noqa: ANN001
    url = str(sqlite_rt.engine.url)
    done = _run("slots", "set", "CERN", "4000", "--share", "User Analysis", "--days", "3", "--db-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set numSlots=4000 for PQ=CERN gshare=User Analysis resource=None"
    listed = _run("slots", "list", "--db-url", url).stdout.splitlines()
    assert listed[1].split()[:4] == ["CERN", "User", "Analysis", "*"] and "4000" in listed[1]
    assert _run("slots", "set", "CERN", "--db-url", url).returncode == 2
    assert "is not a valid name" in _run("slots", "set", "../x", "5", "--db-url", url).stderr
    removed = _run("slots", "remove", "CERN", "--share", "User Analysis", "--db-url", url)
    assert removed.returncode == 0 and "numSlots=-1" in removed.stdout
    assert len(_run("slots", "list", "--db-url", url).stdout.splitlines()) == 1
