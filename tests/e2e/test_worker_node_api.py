"""``pilot/update_worker_node(_gpu)`` over HTTP, sent the way pilot 3.11 sends them.

The pilot posts a gzip-compressed JSON body with ``Content-Encoding: gzip`` and
``Accept: application/json`` and takes any JSON object back as success; a refused call costs it
``update_sleep`` (120 s) before its first getJob. In strict mode only pilot (or production)
identities may write the map.
"""

from __future__ import annotations

import gzip
import json

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import ServerProcess
from tests.e2e import realpilot
from tests.e2e.test_auth_strict import _token, signing_key, token_server  # noqa: F401 - fixtures

NODE = {
    "site": "LOCAL_SITE",
    "panda_queue": "LOCAL_Q",
    "host_name": "slot3@wn07.example.org",
    "cpu_model": "Intel(R) Xeon(R) Gold 6240 CPU @ 2.60GHz",
    "n_logical_cpus": 72,
    "n_sockets": 2,
    "cores_per_socket": 18,
    "threads_per_core": 2,
    "cpu_architecture": "x86_64",
    "cpu_architecture_level": "x86-64-v4",
    "total_memory": 385000,
    "total_local_disk": 1700,
    "clock_speed": 2600.0,
}
GPU = {
    "site": "LOCAL_SITE",
    "host_name": "wn07.example.org",
    "vendor": "NVIDIA",
    "model": "Tesla V100-PCIE-32GB",
    "architecture": "Volta",
    "vram": 32768,
    "framework": "CUDA",
    "framework_version": "12.2",
    "driver_version": "535.104.05",
    "count": 2,
}


def _post(base: str, method: str, data: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/pilot/{method}",
        content=gzip.compress(json.dumps(data).encode()),
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Accept": "application/json",
            **(headers or {}),
        },
        timeout=30,
    )


def test_the_pilot_reports_its_node_and_gpus(sqlite_server: ServerProcess) -> None:
    base = sqlite_server.base
    first = _post(base, "update_worker_node", NODE)
    assert first.status_code == 200
    assert first.json() == {"success": True, "message": "Inserted new worker node.", "data": None}
    again = _post(base, "update_worker_node", {**NODE, "host_name": "slot9@wn07.example.org"}).json()
    assert again["message"] == "Updated existing worker node."
    assert _post(base, "update_worker_node_gpu", GPU).json()["success"] is True
    bad = _post(base, "update_worker_node", {**NODE, "n_sockets": "two"})
    # an argument error is answered in the envelope (HTTP 200, success false), as the real server does
    assert bad.status_code == 200 and bad.json()["success"] is False and "n_sockets" in bad.json()["message"]
    missing = _post(base, "update_worker_node", {k: v for k, v in NODE.items() if k != "cpu_model"})
    assert missing.status_code == 200 and missing.json()["success"] is False
    assert "cpu_model" in missing.json()["message"]
    realpilot.load_queues(sqlite_server.db_url, {"LOCAL_Q": realpilot.queue_definition("LOCAL_Q")})
    page = httpx.get(f"{base}/monitor/queue/LOCAL_Q", timeout=30)
    assert page.status_code == 200 and "wn07.example.org" in page.text and "Tesla V100" in page.text
    nodes = httpx.get(f"{base}/monitor/api/queue/LOCAL_Q", timeout=30).json()["worker_nodes"]
    assert [(n["host_name"], [g["count"] for g in n["gpus"]]) for n in nodes] == [("wn07.example.org", [2])]


def test_only_pilots_write_the_map(token_server: ServerProcess, signing_key: rsa.RSAPrivateKey) -> None:  # noqa: F811
    base = token_server.base
    anonymous = _post(base, "update_worker_node", NODE)
    assert anonymous.status_code == 401, anonymous.text
    user = {"Authorization": f"Bearer {_token(signing_key)}", "Origin": "atlas"}
    refused = _post(base, "update_worker_node_gpu", GPU, user)
    assert refused.status_code == 403 and "pilot role required" in refused.json()["message"], refused.text
    pilot = {
        "Authorization": f"Bearer {_token(signing_key, groups=['atlas', 'atlas/pilot'])}",
        "Origin": "atlas.pilot",
    }
    assert _post(base, "update_worker_node", NODE, pilot).json()["success"] is True
    assert _post(base, "update_worker_node_gpu", GPU, pilot).json()["success"] is True
