"""Strict mode: who may do what, over HTTPS with certificates and over HTTP with tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.certs import USER_DN, Pki, make_pki
from tests.conftest import ServerProcess
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list

PILOT_CN = "Pilot Factory"


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
        pilot_dns=f"/DC=org/DC=pandawms/OU=Users/CN={PILOT_CN}",
        ban_cache_seconds="1",
    )
    yield server
    server.stop()


def _curl(
    url: str,
    pki: Pki,
    cert: Path | None,
    data: dict | None = None,
    form: dict | None = None,
    accept_json: bool = True,
) -> tuple[int, str]:
    cmd = ["curl", "-s", "-w", "\n%{http_code}", "--capath", str(pki.ca_dir)]
    if cert is not None:
        cmd += ["--cert", str(cert), "--key", str(cert)]
    if accept_json:
        cmd += ["-H", "Accept: application/json"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(data)]
    if form is not None:
        for key, value in form.items():
            cmd += ["--data-urlencode", f"{key}={value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=30, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def test_plain_http_only_reads_what_is_public(strict: Httpd) -> None:
    assert httpx.get(strict.base + "/api/v1/system/is_alive").status_code == 200
    reply = httpx.post(
        strict.base + "/api/v1/job/submit", json={"jobs": json.dumps([state_list(make_job())])}
    )
    assert reply.status_code == 401
    assert "needs a secure identity" in reply.json()["message"]
    legacy_reply = httpx.post(
        strict.base + "/server/panda/getJob", data={"siteName": "X"}, headers={"Accept": "application/json"}
    )
    assert legacy_reply.status_code == 401 and legacy_reply.json()["StatusCode"] == 70
    assert httpx.post(strict.base + "/server/panda/getStatus", data={"ids": "1"}).status_code == 200


def test_users_act_on_their_own_jobs_and_pilots_need_the_role(strict: Httpd, pki: Pki) -> None:
    api = strict.https + "/api/v1"
    code, body = _curl(api + "/job/submit", pki, pki.proxy, {"jobs": json.dumps([state_list(make_job())])})
    assert code == 200, body
    (panda_id,) = [a[0] for a in json.loads(body)["data"]]
    code, body = _curl(api + "/job/get_description", pki, pki.proxy, {"job_ids": [panda_id]})
    assert json.loads(body)["data"][0]["prodUserID"] == USER_DN
    bob = pki.add_user("Bob Jones")
    code, body = _curl(api + "/job/kill", pki, bob, {"job_ids": [panda_id]})
    assert (code, json.loads(body)["data"]) == (200, [False])
    code, body = _curl(strict.https + "/server/panda/getJob", pki, pki.proxy, form={"siteName": "TEST_SITE"})
    assert code == 403 and json.loads(body)["StatusCode"] == 60
    code, body = _curl(
        api + "/job/submit",
        pki,
        pki.proxy,
        {"jobs": json.dumps([state_list(make_job(prodSourceLabel="managed"))])},
    )
    assert code == 403 and "missing production" in json.loads(body)["message"]
    factory = pki.add_user(PILOT_CN)
    code, body = _curl(
        strict.https + "/server/panda/getJob",
        pki,
        factory,
        form={"siteName": "TEST_SITE", "prodSourceLabel": "user"},
    )
    assert code == 200 and json.loads(body)["PandaID"] == panda_id
    code, body = _curl(api + "/job/kill", pki, pki.proxy, {"job_ids": [panda_id]})
    assert json.loads(body)["data"] == [True]
    audit = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit", "--job", str(panda_id)],
        env=strict.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "job/kill" in audit.stdout and "CN=Jane Doe" in audit.stdout and "CN=Bob Jones" in audit.stdout


def test_a_banned_user_is_refused_everywhere_quickly(strict: Httpd, pki: Pki) -> None:
    api = strict.https + "/api/v1"
    assert _curl(api + "/job/get_description", pki, pki.proxy, {"job_ids": [1]})[0] == 200
    subprocess.run(
        [sys.executable, "-m", "pandawms", "users", "ban", "Jane Doe", "--reason", "abuse"],
        env=strict.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, body = _curl(api + "/job/get_description", pki, pki.proxy, {"job_ids": [1]})
        if code == 403:
            break
        time.sleep(0.2)
    assert code == 403 and "Jane Doe is banned: abuse" in body
    subprocess.run(
        [sys.executable, "-m", "pandawms", "users", "unban", "Jane Doe"],
        env=strict.env,
        check=True,
        capture_output=True,
        timeout=60,
    )


# --- tokens ---------------------------------------------------------------------------------

ISSUER = "https://iam.pandawms.test/"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def token_server(tmp_path: Path, signing_key: rsa.RSAPrivateKey, start_server) -> ServerProcess:  # noqa: ANN001
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "oidc.json").write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "issuer": ISSUER,
                        "audience": "pandawms",
                        "vo": "atlas",
                        "jwks_file": str(tmp_path / "jwks.json"),
                    }
                ]
            }
        )
    )
    return start_server(
        f"sqlite:///{tmp_path / 'tok.sqlite'}",
        env={"PANDA_AUTH_MODE": "strict", "PANDA_OIDC_CONFIG": str(tmp_path / "oidc.json")},
    )


def _token(key: rsa.RSAPrivateKey, **claims: object) -> str:
    body = {
        "iss": ISSUER,
        "aud": "pandawms",
        "sub": "u-42",
        "name": "jane doe",
        "preferred_username": "jdoe",
        "groups": ["atlas"],
        "exp": int(time.time()) + 600,
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": str(claims.pop("kid", "k1"))})


def _submit(server: ServerProcess, token: str, origin: str | None = "atlas") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if origin:
        headers["Origin"] = origin
    return httpx.post(
        server.base + "/api/v1/job/submit",
        headers=headers,
        json={"jobs": json.dumps([state_list(make_job())])},
    )


def test_tokens_are_verified(token_server: ServerProcess, signing_key: rsa.RSAPrivateKey) -> None:
    good = _submit(token_server, _token(signing_key))
    assert good.status_code == 200, good.text
    panda_id = good.json()["data"][0][0]
    described = httpx.post(
        token_server.base + "/api/v1/job/get_description",
        json={"job_ids": [panda_id]},
        headers={"Authorization": f"Bearer {_token(signing_key)}", "Origin": "atlas"},
    ).json()
    assert described["data"][0]["prodUserName"] == "Jane Doe"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "expired": (_token(signing_key, exp=int(time.time()) - 3600), "atlas", "the token has expired"),
        "foreign issuer": (_token(signing_key, iss="https://evil.example/"), "atlas", "is not accepted here"),
        "audience": (_token(signing_key, aud="someone-else"), "atlas", "not for audience"),
        "signature": (_token(other), "atlas", "Signature verification failed"),
        "no origin": (_token(signing_key), None, "Origin header must name the VO"),
        "wrong vo": (_token(signing_key), "cms", "serves 'atlas'"),
        "role not granted": (_token(signing_key), "atlas.production", "do not grant role 'production'"),
        "garbage": ("not-a-token", "atlas", "malformed token"),
    }
    for case, (token, origin, message) in cases.items():
        reply = _submit(token_server, token, origin)
        assert reply.status_code == 401, case
        assert message in reply.json()["message"], (case, reply.json())


def test_a_production_token_may_pull_jobs(
    token_server: ServerProcess, signing_key: rsa.RSAPrivateKey
) -> None:
    token = _token(signing_key, groups=["atlas", "atlas/production"])
    headers = {"Authorization": f"Bearer {token}", "Origin": "atlas.production", "Accept": "application/json"}
    assert _submit(token_server, _token(signing_key)).status_code == 200
    reply = httpx.post(
        token_server.base + "/server/panda/getJob",
        headers=headers,
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user"},
    )
    assert reply.status_code == 200 and reply.json()["StatusCode"] == 0
    user_only = {
        "Authorization": f"Bearer {_token(signing_key)}",
        "Origin": "atlas",
        "Accept": "application/json",
    }
    refused = httpx.post(
        token_server.base + "/server/panda/getJob", headers=user_only, data={"siteName": "TEST_SITE"}
    )
    assert refused.status_code == 403 and refused.json()["StatusCode"] == 60


def test_a_pilot_token_pulls_jobs_but_submits_nothing(
    token_server: ServerProcess, signing_key: rsa.RSAPrivateKey
) -> None:
    token = _token(signing_key, groups=["atlas", "atlas/pilot"])
    pilot = {"Authorization": f"Bearer {token}", "Origin": "atlas.pilot", "Accept": "application/json"}
    got = httpx.post(
        token_server.base + "/server/panda/getJob", headers=pilot, data={"siteName": "TEST_SITE"}
    )
    assert got.status_code == 200 and got.json()["StatusCode"] in (0, 20), got.text
    jobs = httpx.post(
        token_server.base + "/api/v1/job/submit",
        headers=pilot,
        json={"jobs": json.dumps([state_list(make_job())])},
    )
    assert jobs.status_code == 403 and "role user required" in jobs.json()["message"], jobs.text
    task = httpx.post(
        token_server.base + "/api/v1/task/submit",
        headers=pilot,
        json={"task_parameters": {"taskName": "user.jdoe.pilot-made/", "vo": "atlas"}},
    )
    assert task.status_code == 403 and "role user required" in task.json()["message"], task.text
    # Nor may it speak for a Harvester instance (it could fail any job through update_workers).
    workers = httpx.post(
        token_server.base + "/api/v1/harvester/update_workers",
        headers=pilot,
        json={"harvester_id": "hv-1", "workers": []},
    )
    assert workers.status_code == 403 and "role production required" in workers.json()["message"], (
        workers.text
    )


def test_environment_untouched() -> None:
    assert "PANDA_AUTH_MODE" not in os.environ
