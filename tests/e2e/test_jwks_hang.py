"""An identity provider whose key endpoint hangs does not stall the server.

The token issuer's JWKS endpoint is a local HTTP server the test controls. Keys it served once
keep verifying tokens while it hangs; a token signed with a key it has not published yet (a key
rotation) starts one fetch per worker and is refused with 401 after a bounded wait; meanwhile
every other client of the worker, including ``is_alive``, is answered at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pandawms.api.oidc import REFETCH_INTERVAL
from tests.conftest import ServerProcess

ISSUER = "https://iam.pandawms.test/"


class JwksServer:
    """Serves a key set at /jwks, or hangs on every request while ``hanging`` is set."""

    def __init__(self) -> None:
        self.keys: list[dict[str, object]] = []
        self.hanging = False
        self.release = threading.Event()
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.hits += 1
                if owner.hanging:
                    owner.release.wait(60)
                body = json.dumps({"keys": owner.keys}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


def _token(key: rsa.RSAPrivateKey, kid: str) -> str:
    claims = {
        "iss": ISSUER,
        "aud": "pandawms",
        "sub": "u-42",
        "name": "jane doe",
        "groups": ["atlas"],
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def _attributes(base: str, token: str) -> httpx.Response:
    return httpx.get(
        base + "/api/v1/system/get_attributes",
        headers={"Authorization": f"Bearer {token}", "Origin": "atlas"},
        timeout=60,
    )


def test_hanging_key_endpoint_stalls_nobody(
    jwks: JwksServer, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwks.keys = [_jwk(old, "k1")]
    config = {"issuers": [{"issuer": ISSUER, "audience": "pandawms", "vo": "atlas", "jwks_uri": jwks.url}]}
    (tmp_path / "oidc.json").write_text(json.dumps(config))
    server = start_server(
        f"sqlite:///{tmp_path / 'jwks.sqlite'}",
        env={
            "PANDA_AUTH_MODE": "strict",
            "PANDA_OIDC_CONFIG": str(tmp_path / "oidc.json"),
            "PANDA_WORKERS": "2",
        },
    )
    deadline = time.monotonic() + 30
    while True:  # each worker learns k1 (at start, or on the first token that names it)
        known = [_attributes(server.base, _token(old, "k1")) for _ in range(4)]
        if all(r.status_code == 200 for r in known) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(r.status_code == 200 for r in known), [r.text for r in known]
    assert known[0].json()["data"]["environment"]["PANDA_AUTH_METHOD"] == "token"

    # Past the refetch interval an unknown key id may cause a fetch again.
    time.sleep(REFETCH_INTERVAL + 1)
    # The provider rotates to a new key and stops answering.
    jwks.keys = [_jwk(old, "k1"), _jwk(new, "k2")]
    jwks.hanging = True
    hits_before = jwks.hits
    refused: list[tuple[int, float, str]] = []

    def rotated() -> None:
        started = time.monotonic()
        reply = _attributes(server.base, _token(new, "k2"))
        refused.append((reply.status_code, time.monotonic() - started, reply.text))

    callers = [threading.Thread(target=rotated) for _ in range(6)]
    for caller in callers:
        caller.start()
    time.sleep(0.3)
    for _ in range(5):
        for check in (
            lambda: httpx.get(server.base + "/api/v1/system/is_alive", timeout=30),
            lambda: _attributes(server.base, _token(old, "k1")),
        ):
            started = time.monotonic()
            reply = check()
            took = time.monotonic() - started
            assert reply.status_code == 200, reply.text
            assert took < 5, f"{reply.request.url.path} took {took:.1f} s while the key endpoint hangs"
        time.sleep(0.2)
    for caller in callers:
        caller.join(60)
    print(f"hanging JWKS: new-key tokens refused after at most {max(r[1] for r in refused):.1f} s")
    assert len(refused) == 6
    for status, took, text in refused:
        assert status == 401 and "unknown key id 'k2'" in text, refused
        assert took < 20, f"a token with a new key waited {took:.1f} s: {refused}"
    # One fetch at a time per worker, whatever the number of such tokens.
    assert jwks.hits - hits_before <= 2, f"{jwks.hits - hits_before} fetches while the endpoint hung"
