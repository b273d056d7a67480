"""Resource types, credentials from the operators' directory, and Harvester's worker logs."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pandawms.api.errors import status_of
from pandawms.core.creds import proxies as creds
from pandawms.core.harvester import logs as jedi_logs
from pandawms.core.harvester import workers
from pandawms.core.queues import resource_types
from pandawms.core.runtime import Runtime
from pandawms.db.schema_meta import jedi_logs as jedi_logs_table
from pandawms.model.errors import PandaError, StatusCode
from pandawms.model.identity import Identity
from pandawms.monitor.queries.jobs import job_detail
from tests.jobs import make_job

WHO = Identity(dn="/DC=org/CN=Harvester Service", remote_host="10.0.0.9")


# --- resource types -----------------------------------------------------------------------------


def test_resource_types_are_seeded_and_edited(rt: Runtime) -> None:
    names = [t.resource_name for t in resource_types.list_types(rt)]
    assert names == ["MCORE", "MCORE_HIMEM", "SCORE", "SCORE_HIMEM"]
    assert resource_types.as_dicts(rt)[2] == {
        "resource_name": "SCORE",
        "mincore": 1,
        "maxcore": 1,
        "minrampercore": None,
        "maxrampercore": 2000,
    }
    resource_types.set_type(rt, resource_types.ResourceType("MCORE", 8, 8, None, 2000))
    assert resource_types.list_types(rt)[0] == resource_types.ResourceType("MCORE", 8, 8, None, 2000)
    assert resource_types.delete_type(rt, "SCORE_HIMEM") and not resource_types.delete_type(rt, "NOPE")
    assert len(resource_types.list_types(rt)) == 3
    for bad in (
        resource_types.ResourceType("score", 1, 1, None, None),
        resource_types.ResourceType("X", 4, 2, None, None),
        resource_types.ResourceType("X", -1, None, None, None),
    ):
        with pytest.raises(PandaError):
            resource_types.set_type(rt, bad)


def test_resource_types_cli(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pandawms", "resource-types", *args, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    subprocess.run(
        [sys.executable, "-m", "pandawms", "db", "init", "--data-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    listed = run("list")
    assert listed.returncode == 0 and "SCORE_HIMEM" in listed.stdout and "2001" in listed.stdout
    added = run("set", "SCORE_LOMEM", "--min-core", "1", "--max-core", "1", "--max-ram-per-core", "1000")
    assert added.returncode == 0 and "SCORE_LOMEM" in added.stdout
    refused = run("set", "BAD", "--min-core", "4", "--max-core", "2")
    assert refused.returncode == 2 and "minimum 4 is above maximum 2" in refused.stderr
    assert run("delete", "SCORE_LOMEM").returncode == 0 and "SCORE_LOMEM" not in run("list").stdout


# --- credentials ----------------------------------------------------------------------------------


def test_credentials_come_from_the_directory_by_name(tmp_path: Path, make_runtime: Any) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'c.sqlite'}", creds_dir=str(tmp_path / "creds"))
    (tmp_path / "creds" / "proxies").mkdir(parents=True)
    (tmp_path / "creds" / "keys").mkdir()
    (tmp_path / "creds" / "token_keys").mkdir()
    (tmp_path / "creds" / "proxies" / "Jane_Doe.pem").write_text("plain")
    (tmp_path / "creds" / "proxies" / "Jane_Doe.atlas__atlas_Role_production.pem").write_text("prod")
    (tmp_path / "creds" / "keys" / "pub").write_text("P")
    (tmp_path / "creds" / "token_keys" / "client").write_text("latest\nolder\n")
    dn = "/DC=org/DC=pandawms/OU=Users/CN=Jane Doe/CN=123456"
    assert creds.get_proxy(rt.settings, dn, None) == "plain"
    assert creds.get_proxy(rt.settings, dn, "atlas:/atlas/Role=production") == "prod"
    assert creds.get_token_key(rt.settings, "client") == "latest"
    with pytest.raises(creds.CredentialMissing) as missing:
        creds.get_key_pair(rt.settings, "pub", "priv")
    assert missing.value.code == StatusCode.MISSING_KEY and "priv is missing" in missing.value.message
    # names never leave the directory
    for hostile in ("../../etc/passwd", "..", ".hidden"):
        part = creds.file_part(hostile)
        assert "/" not in part and not part.startswith(".")
    (tmp_path / "creds" / "keys" / "big").write_bytes(b"x" * (creds.MAX_CRED_BYTES + 1))
    with pytest.raises(PandaError, match="larger than"):
        creds.get_key_pair(rt.settings, "big", "big")


def test_without_a_directory_the_refusal_names_the_setting(sqlite_rt: Runtime) -> None:
    with pytest.raises(PandaError, match=r"set creds_dir \(PANDA_CREDS_DIR\)"):
        creds.get_token_key(sqlite_rt.settings, "client")


# --- worker logs ----------------------------------------------------------------------------------


def test_worker_logs_are_appended_and_linked_to_the_job(rt: Runtime) -> None:
    from pandawms.core.jobs import dispatch, submit

    (panda_id,) = [a[0] for a in submit.submit_jobs(rt, [make_job(prodSourceLabel="managed")], WHO)]
    dispatch.acquire_jobs(
        rt, dispatch.DispatchRequest("TEST_SITE", n_jobs=1, prod_source_label="managed"), WHO
    )
    name = "hv-1__worker7.out"
    workers.update_workers(
        rt,
        "hv-1",
        [
            {
                "workerID": 7,
                "status": "running",
                "computingSite": "TEST_SITE",
                "pandaid_list": [panda_id],
                "stdOut": f"https://server/cache/jedilog/{name}",
            }
        ],
    )
    assert jedi_logs.append(rt, WHO, name, zlib.compress(b"first\n")) == (name, 6)
    assert jedi_logs.append(rt, WHO, f"some/dir/{name}", b"second\n") == (name, 13)
    assert (jedi_logs.log_dir(rt) / name).read_bytes() == b"first\nsecond\n"
    assert jedi_logs.read(rt, name, 6) == "second\n"
    with rt.engine.connect() as conn:
        row = conn.execute(select(jedi_logs_table)).mappings().one()
    assert (row["harvesterID"], row["workerID"], row["fileSize"]) == ("hv-1", 7, 13)
    detail = job_detail(rt, panda_id, with_why=False)
    assert detail is not None and detail["worker_logs"] == [
        {
            "harvesterID": "hv-1",
            "workerID": 7,
            "kind": "stdOut",
            "fileName": name,
            "fileSize": 13,
            "path": f"/cache/jedilog/{name}",
        }
    ]


def test_worker_logs_are_bounded_and_safely_named(tmp_path: Path, make_runtime: Any) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'l.sqlite'}", jedi_log_max_bytes=1024)
    for bad in ("..", ".hidden", "a b", ""):
        with pytest.raises(PandaError):
            jedi_logs.append(rt, WHO, bad, b"x")
    # a small zlib body that inflates past the limit is refused without inflating it whole
    with pytest.raises(PandaError, match="size limit") as bomb:
        jedi_logs.append(rt, WHO, "bomb.log", zlib.compress(b"\0" * 10_000_000))
    assert status_of(bomb.value) == 413
    jedi_logs.append(rt, WHO, "grow.log", b"x" * 1000)
    with pytest.raises(PandaError, match="would hold 1100"):
        jedi_logs.append(rt, WHO, "grow.log", b"y" * 100)
    assert (jedi_logs.log_dir(rt) / "grow.log").stat().st_size == 1000
    with pytest.raises(PandaError, match="no log named"):
        jedi_logs.read(rt, "absent.log", 0)
    # the cache cleaner removes logs nothing was appended to for cache_lifetime
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
        seconds=rt.settings.cache_lifetime + 60
    )
    assert jedi_logs.expire(rt, later) == 1 and not (jedi_logs.log_dir(rt) / "grow.log").exists()
