"""Token pilots renew their token through the server: pilot 3.11's own code against a real issuer.

The issuer is a small OAuth2 token endpoint on loopback that grants the client-credentials flow
to one client id and secret; the server is configured with them (the secret from a file). The
pilot's ``refresh_oidc_token`` (from the 3.11 source tarball) calls ``get_access_token`` and
overwrites its token file with the answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

PILOT_NAME = "pilot3-3.11.5.1.tar.gz"


def _pilot_tarball() -> Path:
    """``../shared/clients/`` from the project root (or from a directory above it)."""
    root = Path(__file__).resolve().parents[2]
    for base in (root.parent, *root.parent.parents):
        candidate = base / "shared" / "clients" / PILOT_NAME
        if candidate.is_file():
            return candidate
    return root.parent / "shared" / "clients" / PILOT_NAME


PILOT_TARBALL = _pilot_tarball()
CLIENT_ID, CLIENT_SECRET = "pandawms-server", "issuer-secret"


class _Issuer(BaseHTTPRequestHandler):
    """POST /token: client_credentials for one client; counts the grants it gave."""

    grants: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        good = (
            self.path == "/token"
            and form.get("grant_type") == "client_credentials"
            and form.get("client_id") == CLIENT_ID
            and form.get("client_secret") == CLIENT_SECRET
        )
        if not good:
            self.send_response(401)
            self.end_headers()
            return
        token = f"issued-token-{len(self.grants) + 1}"
        self.grants.append(token)
        body = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        return


@pytest.fixture
def issuer() -> Iterator[str]:
    _Issuer.grants = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Issuer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/token"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def pilot_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PILOT_TARBALL.is_file():
        pytest.skip(f"the pilot 3.11 source is missing: {PILOT_TARBALL}")
    target = tmp_path_factory.mktemp("pilot311")
    with tarfile.open(PILOT_TARBALL) as tar:
        tar.extractall(target, filter="data")
    found = next(target.glob("*/pilot/util/https.py"), None)
    assert found is not None, "no pilot/util/https.py in the tarball"
    return found.parents[2]


REFRESH = r"""
import sys
sys.path.insert(0, sys.argv[1])
import pilot.info  # the pilot's own import order (https and info import each other)
from pilot.util import https
ok = https.refresh_oidc_token("token", "atlas.pilot", "http://127.0.0.1", int(sys.argv[2]))
print("RESULT:" + str(ok))
"""


def test_a_token_pilot_renews_its_token(
    start_server: Callable[..., ServerProcess], tmp_path: Path, issuer: str, pilot_source: Path
) -> None:
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o600)
    server = start_server(
        f"sqlite:///{tmp_path / 'tok.sqlite'}",
        {
            "PANDA_TOKEN_ENDPOINT": issuer,
            "PANDA_TOKEN_CLIENT_ID": CLIENT_ID,
            "PANDA_TOKEN_CLIENT_SECRET_FILE": str(secret_file),
        },
    )
    home = tmp_path / "wn"
    home.mkdir()
    (home / "token").write_text("old-token")
    (home / "token_key").write_text("the-token-key")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PILOT_HOME": str(home),
        "OIDC_AUTH_DIR": str(home / "token"),
        "PANDA_AUTH_TOKEN_KEY": "token_key",
    }
    proc = subprocess.run(
        [sys.executable, "-c", REFRESH, str(pilot_source), str(server.port)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RESULT:True" in proc.stdout, proc.stdout + proc.stderr
    assert (home / "token").read_text() == "issued-token-1"
    # v1 as well; the token is reused until near its expiry (one grant for both calls).
    reply = httpx.get(
        server.base + "/api/v1/creds/get_access_token", params={"client_name": "pilot_server"}
    ).json()
    assert reply == {"success": True, "message": "", "data": {"user_proxy": "issued-token-1"}}
    assert _Issuer.grants == ["issued-token-1"]
    # Another client name is not served; the answer says which one is.
    other = httpx.get(server.base + "/api/v1/creds/get_access_token", params={"client_name": "cms"}).json()
    assert other["success"] is False and "client_name=pilot_server" in other["message"]


def test_a_wrong_client_secret_is_a_clear_refusal(
    start_server: Callable[..., ServerProcess], tmp_path: Path, issuer: str
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'bad.sqlite'}",
        {
            "PANDA_TOKEN_ENDPOINT": issuer,
            "PANDA_TOKEN_CLIENT_ID": CLIENT_ID,
            "PANDA_TOKEN_CLIENT_SECRET": "wrong",
        },
    )
    legacy = httpx.get(
        server.base + "/server/panda/get_access_token",
        params={"client_name": "pilot_server", "token_key": "k"},
    )
    assert legacy.status_code == 200
    assert legacy.json() == {
        "StatusCode": 90,
        "errorDialog": "the token issuer refused the request (HTTP 401)",
    }
