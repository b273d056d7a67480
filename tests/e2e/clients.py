"""Running the real panda-client against a server, in its own process.

panda-client reads its configuration from the environment when it is imported, so each use
runs in a fresh interpreter with the server's URL set.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def client_env(base: str, config_root: Path, token_claims: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment for panda-client talking to ``base`` (plain HTTP, optionally with a token)."""
    env = {
        **os.environ,
        "PANDA_URL_SSL": base + "/server/panda",
        "PANDA_URL": base + "/server/panda",
        "PANDACACHE_URL": base + "/server/panda",
        "PANDA_BEHIND_REAL_LB": "1",
        "PANDA_CONFIG_ROOT": str(config_root),
    }
    if token_claims is not None:
        env.update(PANDA_AUTH="oidc", PANDA_AUTH_VO="atlas", PANDA_AUTH_ID_TOKEN=make_token(token_claims))
    return env


def make_token(claims: dict[str, Any]) -> str:
    """A JWT-shaped token (unsigned): enough for panda-client, which never verifies it."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def run_client(script: str, env: dict[str, str], timeout: int = 120) -> Any:
    """Run ``script`` with panda-client importable; it must print one JSON line prefixed RESULT:."""
    pytest.importorskip("pandaclient", reason="panda-client is not installed (pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT:"):
            return json.loads(line[len("RESULT:") :])
    raise AssertionError(f"panda-client script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
