"""The sandbox cache: uploads, reuse by size and CRC, serving, limits, names, expiry."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pandawms.api.errors import status_of
from pandawms.core import files
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks import sandbox as cache_files
from pandawms.db.schema_tasks import cache_files as cache_table
from pandawms.db.schema_tasks import task_params, tasks
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.conftest import ServerProcess

JANE = Identity(dn="/CN=Jane Doe", method="x509")


def _sandbox(text: str = "print('hello')\n") -> bytes:
    return gzip.compress(text.encode())


def _crc(data: bytes) -> int:
    return int(struct.unpack("II", data[-8:])[0])


def test_store_reuse_and_names(rt: Runtime) -> None:
    data = _sandbox()
    stored = cache_files.store(rt, JANE, "sources.1.tar.gz", data)
    assert stored.size == len(data) and stored.checksum == str(_crc(data))
    assert (files.cache_dir(rt.settings) / "sources.1.tar.gz").read_bytes() == data
    found = cache_files.find_reusable(rt, JANE, len(data), str(_crc(data)))
    assert found is not None and found.startswith("FOUND:") and found.endswith(":sources.1.tar.gz")
    assert cache_files.find_reusable(rt, Identity(dn="/CN=Other"), len(data), str(_crc(data))) is None
    with pytest.raises(PandaError, match="cannot overwrite"):
        cache_files.store(rt, JANE, "sources.1.tar.gz", data)
    for bad in ("..", ".hidden", "a b", "x" * 300, ""):
        with pytest.raises(PandaError, match="not allowed"):
            cache_files.store(rt, JANE, bad, data)
    # A path is reduced to its base name: nothing is written outside the cache directory.
    assert cache_files.store(rt, JANE, "../../evil.tgz", data).name == "evil.tgz"
    assert not (files.cache_dir(rt.settings).parent / "evil.tgz").exists()


def test_size_limit_and_expiry(make_runtime: Callable[..., Runtime], db_url: str) -> None:
    rt = make_runtime(db_url, cache_max_bytes=2048, cache_lifetime=60)
    with pytest.raises(PandaError, match="Exceeded size limit") as refused:
        cache_files.store(rt, JANE, "big.tgz", b"x" * 4096)
    assert status_of(refused.value) == 413
    old = cache_files.store(rt, JANE, "old.tgz", _sandbox("a"))
    kept = cache_files.store(rt, JANE, "kept.tgz", _sandbox("b"))
    fresh = cache_files.store(rt, JANE, "fresh.tgz", _sandbox("c"))
    now = utcnow()
    long_ago = now - dt.timedelta(hours=2)
    with rt.engine.begin() as conn:
        conn.execute(
            cache_table.update()
            .where(cache_table.c.fileName.in_([old.name, kept.name]))
            .values(modificationTime=long_ago)
        )
        result = conn.execute(
            tasks.insert().values(
                taskName="user.jane.x/",
                status="running",
                userName="Jane Doe",
                prodRole=0,
                maxAttempt=3,
                maxFailure=3,
                attemptNr=0,
                nextSerialNr=1,
                creationDate=now,
                modificationTime=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        conn.execute(
            task_params.insert().values(jediTaskID=key[0], taskParams=json.dumps({"archive": "-a kept.tgz"}))
        )
    assert cache_files.expire(rt) == 1
    directory = files.cache_dir(rt.settings)
    assert not (directory / old.name).exists()
    assert (directory / kept.name).exists() and (directory / fresh.name).exists()
    with rt.engine.connect() as conn:
        names = sorted(r[0] for r in conn.execute(select(cache_table.c.fileName)))
    assert names == ["fresh.tgz", "kept.tgz"]


def test_upload_validate_and_serve_over_http(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'cache.sqlite'}", {"PANDA_CACHE_MAX_BYTES": "4096"})
    api = server.base + "/api/v1/file_server"
    data = _sandbox("echo hi")
    up = httpx.post(api + "/upload_cache_file", files={"file": ("sources.x.tar.gz", data)}).json()
    assert up["success"] and up["data"]["name"] == "sources.x.tar.gz"
    check = httpx.post(
        api + "/validate_cache_file", json={"file_size": len(data), "checksum": _crc(data)}
    ).json()
    assert check["message"] == "FOUND:127.0.0.1:sources.x.tar.gz"
    miss = httpx.post(api + "/validate_cache_file", json={"file_size": 1, "checksum": 5}).json()
    assert miss["success"] is False
    got = httpx.get(server.base + "/cache/sources.x.tar.gz")
    assert got.status_code == 200 and got.content == data
    assert got.headers["cache-control"] == "public, max-age=3600"
    for bad in ("/cache/..%2Fserver.sqlite", "/cache/nothing.tgz", "/cache/.upload-x"):
        assert httpx.get(server.base + bad).status_code == 404, bad
    big = httpx.post(api + "/upload_cache_file", files={"file": ("big.tgz", b"y" * 5000)})
    assert big.status_code == 413 and "Exceeded size limit" in big.json()["message"]
    bad_name = httpx.post(api + "/upload_cache_file", files={"file": ("..", b"z")})
    assert bad_name.status_code == 200 and bad_name.json()["success"] is False
    assert "file name" in bad_name.json()["message"]
    no_file = httpx.post(api + "/upload_cache_file", json={"file": "x"})
    assert no_file.status_code == 200 and no_file.json()["success"] is False
    assert "file" in no_file.json()["message"]
