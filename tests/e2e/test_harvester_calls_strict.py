"""Strict mode for the Harvester calls added for its credential managers, cacher, propagator,
statistics and the event service: who is refused, and what the allowed callers get."""

from __future__ import annotations

import gzip
import json
import os
import ssl
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from tests.certs import Pki, make_pki
from tests.e2e import harvester_env
from tests.e2e.httpd_proc import Httpd

STATISTICS = [
    "active_job_stats_by_site",
    "active_job_detailed_stats_by_site",
    "job_stats_by_cloud",
    "production_job_stats_by_cloud_and_processing_type",
    "job_stats_by_site_and_resource_type",
    "job_stats_by_site_share_and_resource_type",
]
#: (method path, verb, parameters) of calls only a production identity may make.
PRODUCTION_ONLY = [
    ("creds/get_proxy", "GET", {"role": "atlas"}),
    ("creds/get_key_pair", "GET", {"public_key_name": "a", "private_key_name": "b"}),
    ("creds/get_token_key", "GET", {"client_name": "c"}),
]
#: Event-service calls a pilot or production identity may make.
PILOT_ONLY = [
    ("event/acquire_event_ranges", "POST", {"job_id": 1, "jobset_id": 1, "n_ranges": 2}),
    ("event/update_event_ranges", "POST", {"event_ranges": "[]", "version": 1}),
    (
        "event/update_single_event_range",
        "POST",
        {"event_range_id": "1-2-3", "event_range_status": "finished"},
    ),
    ("event/get_available_event_range_count", "GET", {"job_id": 1, "jobset_id": 1, "task_id": 1}),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def strict(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    server = Httpd(
        tmp_path,
        pki,
        workers=1,
        auth_mode="strict",
        pilot_dns="/DC=org/DC=pandawms/OU=Users/CN=Pilot Factory",
        production_dns="/DC=org/DC=pandawms/OU=Users/CN=Harvester Service",
        cache_dir=str(tmp_path / "cache"),
    )
    yield server
    server.stop()


def _client(server: Httpd, pki: Pki, cert: Path) -> httpx.Client:
    context = ssl.create_default_context(capath=str(pki.ca_dir))
    context.load_cert_chain(str(cert))
    return httpx.Client(base_url=server.https, verify=context, timeout=60)


def _call(client: httpx.Client, path: str, verb: str, params: dict) -> httpx.Response:
    if verb == "GET":
        return client.get(f"/api/v1/{path}", params=params)
    return client.post(f"/api/v1/{path}", json=params)


def test_anonymous_callers_are_refused(strict: Httpd) -> None:
    plain = httpx.Client(base_url=strict.base, timeout=60)
    calls = [(f"statistics/{m}", "GET", {}) for m in STATISTICS] + PRODUCTION_ONLY + PILOT_ONLY
    calls += [
        ("metaconfig/get_resource_types", "GET", {}),
        ("metaconfig/get_banned_users", "GET", {}),
        ("file_server/download_jedi_log", "GET", {"log_name": "x.log"}),
        ("event/get_event_range_statuses", "GET", {"job_task_ids": "1"}),
    ]
    for path, verb, params in calls:
        reply = _call(plain, path, verb, params)
        assert reply.status_code == 401, (path, reply.text)
        assert "needs a secure identity" in reply.json()["message"]
    upload = plain.post("/api/v1/file_server/upload_jedi_log", files={"file": ("x.log", b"x")})
    assert upload.status_code == 401


def test_users_read_statistics_but_get_no_credentials(strict: Httpd, pki: Pki) -> None:
    user = _client(strict, pki, pki.proxy)
    for method in STATISTICS:
        reply = user.get(f"/api/v1/statistics/{method}")
        assert reply.status_code == 200 and reply.json()["success"] is True, (method, reply.text)
    types = user.get("/api/v1/metaconfig/get_resource_types").json()
    assert types["success"] and {t["resource_name"] for t in types["data"]} >= {"SCORE", "MCORE"}
    assert user.get("/api/v1/metaconfig/get_banned_users").json() == {
        "success": True,
        "message": "",
        "data": {},
    }
    subprocess.run(
        [sys.executable, "-m", "pandawms", "users", "ban", "Bob Jones", "--reason", "abuse"],
        env=strict.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert user.get("/api/v1/metaconfig/get_banned_users").json()["data"] == {"Bob Jones": False}
    for path, verb, params in PRODUCTION_ONLY:
        reply = _call(user, path, verb, params)
        assert reply.status_code == 403, (path, reply.text)
        assert "role production required" in reply.json()["message"]
    for path, verb, params in PILOT_ONLY:
        reply = _call(user, path, verb, params)
        assert reply.status_code == 403, (path, reply.text)
        assert "production or pilot role required" in reply.json()["message"]
    for name in ("upload_jedi_log", "update_jedi_log"):
        reply = user.post(f"/api/v1/file_server/{name}", files={"file": ("hv__w.out", b"text")})
        assert reply.status_code == 403, reply.text
    bad_window = user.get(
        "/api/v1/statistics/job_stats_by_site_and_resource_type", params={"time_window": 99999}
    )
    assert bad_window.json()["success"] is False and "time_window" in bad_window.json()["message"]


def test_production_gets_plain_refusals_and_logs(strict: Httpd, pki: Pki) -> None:
    harvester = _client(strict, pki, pki.add_user("Harvester Service"))
    # no creds_dir on this server: the refusal says which setting to set
    for path, verb, params in PRODUCTION_ONLY:
        body = _call(harvester, path, verb, params).json()
        assert body["success"] is False and "set creds_dir (PANDA_CREDS_DIR)" in body["message"], path
    # no such job: no ranges, nothing to update, none available (the answers Harvester reads)
    answers = [_call(harvester, path, verb, params).json() for path, verb, params in PILOT_ONLY]
    assert answers[0] == {"success": True, "message": "", "data": {"StatusCode": 0, "eventRanges": []}}
    assert answers[1] == {
        "success": True,
        "message": "",
        "data": {"StatusCode": 0, "Returns": [], "Commands": {}},
    }
    assert answers[2]["success"] is False and "not updated" in answers[2]["message"]
    assert answers[3] == {"success": True, "message": "", "data": 0}
    uploaded = harvester.post("/api/v1/file_server/upload_jedi_log", files={"file": ("hv__w.out", b"line\n")})
    assert uploaded.json()["success"] is True
    assert uploaded.json()["data"].endswith("/cache/jedilog/hv__w.out")
    traversal = harvester.post("/api/v1/file_server/upload_jedi_log", files={"file": ("../..", b"x")})
    assert traversal.status_code == 200 and traversal.json()["success"] is False
    back = harvester.get(
        "/api/v1/file_server/download_jedi_log", params={"log_name": "hv__w.out", "offset": 2}
    )
    assert back.json()["data"] == "ne\n"


def test_legacy_credentials_need_production_and_resource_types_need_a_pilot(strict: Httpd, pki: Pki) -> None:
    pilot = _client(strict, pki, pki.add_user("Pilot Factory"))
    refused = pilot.post("/server/panda/getProxy", data={"role": "atlas"})
    assert refused.status_code == 403
    # pilot 3.11's getResourceTypes: a gzip-compressed JSON body, no Accept header, and a reply it
    # parses with parse_qs, then reads ResourceTypes as JSON text (pilot/util/https.py)
    reply = pilot.post(
        "/server/panda/getResourceTypes",
        content=gzip.compress(json.dumps({}).encode()),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 200
    fields = {k: v[0] for k, v in parse_qs(reply.text).items()}
    assert fields["StatusCode"] == "0"
    types = json.loads(fields["ResourceTypes"].replace("None", "null").replace("'", '"'))
    assert {t["resource_name"]: t["maxrampercore"] for t in types}["SCORE"] == 2000
    user = _client(strict, pki, pki.proxy)
    assert user.post("/server/panda/getResourceTypes", data={}).status_code == 403
    harvester = _client(strict, pki, pki.add_user("Harvester Service"))
    keys = harvester.post("/server/panda/getKeyPair", data={"publicKeyName": "a", "privateKeyName": "b"})
    assert keys.status_code == 200 and "creds_dir" in parse_qs(keys.text)["errorDialog"][0]


def test_pilot_3_11_reads_the_resource_types(strict: Httpd, pki: Pki, tmp_path: Path) -> None:
    """The newest pilot's own ``get_memory_limits`` (pilot/util/https.py) against the server."""
    archives = sorted(harvester_env.CLIENTS.glob("pilot3-*.tar.gz"))
    if not archives:
        pytest.skip(f"the pilot 3.11 source tarball is not in {harvester_env.CLIENTS} (pilot3-*.tar.gz)")
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(tmp_path, filter="data")
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import pilot.info  # the pilot's own import order (https <-> dataloader)\n"
        "from pilot.util.https import get_memory_limits\n"
        "print('LIMITS:' + json.dumps(get_memory_limits('https://localhost', int(sys.argv[2]))))\n"
    )
    env = {
        **os.environ,
        "X509_USER_PROXY": str(pki.add_user("Pilot Factory")),
        "X509_CERT_DIR": str(pki.ca_dir),
        "PILOT_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pilot3"), str(strict.https_port)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("LIMITS:")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    limits = json.loads(lines[0][len("LIMITS:") :])
    assert limits["SCORE"] == {"mincore": 1, "maxcore": 1, "minrampercore": None, "maxrampercore": 2000}
    assert limits["MCORE_HIMEM"]["minrampercore"] == 2001
