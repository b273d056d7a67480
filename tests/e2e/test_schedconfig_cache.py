"""Queue files under /cache/schedconfig/, as pilots and squid fetch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerProcess


def test_queue_json_is_cacheable_and_revalidates(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    queues = {"LOCAL_TEST": {"status": "online", "corecount": 1, "copytools": {"mv": {}}, "maxwdir": 10000}}
    path = tmp_path / "queues.json"
    path.write_text(json.dumps(queues))
    db = sqlite_server.db_url
    loaded = subprocess.run(
        [sys.executable, "-m", "pandawms", "queues", "load", str(path), "--db-url", db],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    base = sqlite_server.base + "/cache/schedconfig/"
    first = httpx.get(base + "LOCAL_TEST.all.json")
    assert first.status_code == 200
    assert first.json()["copytools"] == {"mv": {}} and first.json()["state"] == "ACTIVE"
    assert first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    again = httpx.get(base + "LOCAL_TEST.all.json", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(base + "schedconfig.all.json").json()["LOCAL_TEST"]["corecount"] == 1
    assert httpx.get(base + "NOPE.all.json").status_code == 404
    assert httpx.get(base + "../../etc/passwd").status_code == 404
    specs = httpx.get(sqlite_server.base + "/api/v1/metaconfig/get_site_specs").json()
    assert specs["success"] and "LOCAL_TEST" in specs["data"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"LOCAL_TEST": {"status": "maybe"}}))
    refused = subprocess.run(
        [sys.executable, "-m", "pandawms", "queues", "load", str(bad), "--db-url", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "status must be one of" in refused.stderr
    assert httpx.get(base + "LOCAL_TEST.all.json").headers["etag"] == etag
