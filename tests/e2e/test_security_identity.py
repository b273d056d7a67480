"""Strict mode against hostile callers: who a caller is, what they own, which roles they hold.

One real ``pandawms httpd`` per database backend (SQLite and PostgreSQL), with HTTPS and
test-made certificates and proxies, tokens signed by a test key with a JWKS file, and a
"front end" that is simply a client bound to 127.0.0.2 (the trusted proxy address).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pandawms.config import load_settings
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.db.versioning import init_schema
from tests.certs import USER_DN, Pki, make_pki
from tests.conftest import _empty_tables
from tests.core.tasks.test_tasks import QUEUE, prun_params
from tests.dbs import BACKENDS
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list

ISSUER = "https://iam.pandawms.test/"
FRONT_END = "127.0.0.2"
USERS = "/DC=org/DC=pandawms/OU=Users/CN="
PROD_DN = USERS + "Prod Robot"
PILOT_DN = USERS + "Pilot Factory"
PILOT2_DN = USERS + "Pilot Two"
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Strict:
    """The server and how to reach it as each kind of caller."""

    httpd: Httpd
    pki: Pki
    key: rsa.RSAPrivateKey
    rt: Runtime

    def x509(self, common_name: str | None = None) -> httpx.Client:
        """An HTTPS client with Jane's proxy, or with a certificate for ``common_name``."""
        pem = self.pki.proxy if common_name is None else self.pki.add_user(common_name)
        context = ssl.create_default_context(capath=str(self.pki.ca_dir))
        context.load_cert_chain(str(pem))
        return httpx.Client(base_url=self.httpd.https, verify=context, headers=JSON, timeout=30)

    def plain(self, local_address: str = "127.0.0.1", **headers: str) -> httpx.Client:
        """A plain-HTTP client from ``local_address`` sending ``headers`` on every request."""
        transport = httpx.HTTPTransport(local_address=local_address)
        return httpx.Client(
            base_url=self.httpd.base, transport=transport, headers={**JSON, **headers}, timeout=30
        )

    def token(self, origin: str = "atlas", **claims: Any) -> httpx.Client:
        """A plain-HTTP client presenting a token signed by the configured issuer."""
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
        token = jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})
        return self.plain(Authorization=f"Bearer {token}", Origin=origin)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def strict(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    signing_key: rsa.RSAPrivateKey,
) -> Iterator[Strict]:
    tmp = tmp_path_factory.mktemp(f"strict-{request.param}")
    url = f"sqlite:///{tmp / 'db.sqlite'}" if request.param == "sqlite" else BACKENDS[request.param].require()
    rt = Runtime.from_settings(load_settings(None, {"db_url": url, "data_dir": str(tmp)}))
    init_schema(rt.engine)
    _empty_tables(rt)
    load_queues(rt, json.dumps({QUEUE: {"name": QUEUE, "status": "online", "corecount": 1, "maxrss": 4000}}))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    issuer = {"issuer": ISSUER, "audience": "pandawms", "vo": "atlas", "jwks_file": str(tmp / "jwks.json")}
    (tmp / "oidc.json").write_text(json.dumps({"issuers": [issuer]}))
    server = Httpd(
        tmp,
        pki,
        workers=1,
        db_url=url,
        auth_mode="strict",
        trusted_proxies=FRONT_END,
        production_dns=PROD_DN,
        pilot_dns=f"{PILOT_DN},{PILOT2_DN},/CN=Pilot Factory",
        oidc_config=str(tmp / "oidc.json"),
    )
    try:
        yield Strict(server, pki, signing_key, rt)
    finally:
        server.stop()
        rt.engine.dispose()


@pytest.fixture(autouse=True)
def _read_notifications(strict: Strict) -> Iterator[None]:
    """Empty the notify socket the server writes its status to every second.

    The server shares one process across this module's tests; an unread socket fills up and
    then blocks the server's master process (systemd always reads it).
    """
    strict.httpd.read_notify()
    yield
    strict.httpd.read_notify()


def _submit(client: httpx.Client, **attrs: Any) -> int:
    reply = client.post("/api/v1/job/submit", json={"jobs": json.dumps([state_list(make_job(**attrs))])})
    assert reply.status_code == 200 and reply.json()["success"], reply.text
    return int(reply.json()["data"][0][0])


def _kill(client: httpx.Client, panda_id: int) -> Any:
    return client.post("/api/v1/job/kill", json={"job_ids": [panda_id]}).json()["data"]


def _seen(client: httpx.Client) -> dict[str, Any]:
    """The caller as the server sees it (system/get_attributes)."""
    return dict(client.get("/api/v1/system/get_attributes").json()["data"]["environment"])


def _status(strict: Strict, panda_id: int) -> str:
    reply = httpx.post(strict.httpd.base + "/server/panda/getStatus", data={"ids": str(panda_id)})
    return reply.text.split("status=")[1].split("&")[0]


# --- 1. trusted front ends are socket addresses ---------------------------------------------


def test_forwarded_for_cannot_make_a_local_client_a_front_end(strict: Strict) -> None:
    with strict.x509() as jane:
        panda_id = _submit(jane, site="XFF_SITE")
    forged = {
        "X-Forwarded-For": FRONT_END,
        "X-SSL-Client-S-DN": PROD_DN,
        "X-SSL-Client-FQANs": "/atlas/Role=production",
    }
    with strict.plain(**forged) as attacker:
        seen = _seen(attacker)
        assert seen["SSL_CLIENT_S_DN"] is None and seen["PANDA_AUTH_METHOD"] == "anonymous", seen
        assert seen["REMOTE_ADDR"] == "127.0.0.1"
        refused = attacker.post("/api/v1/job/kill", json={"job_ids": [panda_id]})
        assert refused.status_code == 401, refused.text
    assert _status(strict, panda_id) == "activated"
    # The real front end (its socket address is trusted) passes the DN; the client address it
    # recorded is the one it appended to X-Forwarded-For, not what the client wrote before it.
    through = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-SSL-Client-S-DN": USER_DN}
    with strict.plain(FRONT_END, **through) as front_end:
        seen = _seen(front_end)
        assert (seen["SSL_CLIENT_S_DN"], seen["PANDA_AUTH_METHOD"]) == (USER_DN, "header")
        assert seen["REMOTE_ADDR"] == "198.51.100.7"
        assert _kill(front_end, panda_id) == [True]


# --- 2. owners are identities ---------------------------------------------------------------


def test_owners_are_identities_not_display_names(strict: Strict) -> None:
    with (
        strict.x509() as jane,
        strict.x509("Jane Doe 2") as namesake,
        strict.token(sub="u-other") as token_twin,
    ):
        panda_id = _submit(jane, site="OWN_SITE")
        assert _seen(namesake)["PANDA_USER_NAME"] == "Jane Doe"  # the same display name...
        assert _kill(namesake, panda_id) == [False]  # ...is not the same owner
        assert _kill(token_twin, panda_id) == [False]
        assert _status(strict, panda_id) == "activated"
        with strict.token() as token_jane, strict.token(name="jane q. doe") as renamed:
            token_job = _submit(token_jane, site="OWN_SITE")
            described = token_jane.post("/api/v1/job/get_description", json={"job_ids": [token_job]}).json()
            job = described["data"][0]
            assert job["prodUserName"] == "Jane Doe"  # the display name clients show
            assert "u-42" in job["prodUserID"] and "iam.pandawms.test" in job["prodUserID"]
            assert job["prodUserID"].startswith("/")
            assert _kill(jane, token_job) == [False]
            assert _kill(token_twin, token_job) == [False]
            # The owner is issuer and subject: a changed name claim is still the same person.
            assert _kill(renamed, token_job) == [True]
        assert _kill(jane, panda_id) == [True]
        # Tasks: the owner is the task's DN.
        task = jane.post("/api/v1/task/submit", json={"task_parameters": prun_params("user.jdoe.own/")})
        assert task.json()["success"], task.text
        task_id = task.json()["data"]
        for other in (namesake, token_twin):
            refused = other.post("/api/v1/task/kill", json={"task_id": task_id}).json()
            assert refused["data"] == 3 and "not the task owner" in refused["message"], refused
        assert jane.post("/api/v1/task/kill", json={"task_id": task_id}).json()["success"]


# --- 3. roles by whole values of our VO -----------------------------------------------------


def _may_pull(client: httpx.Client) -> bool:
    reply = client.post("/server/panda/getJob", data={"siteName": "NO_SUCH_SITE"})
    if reply.status_code == 403:
        assert reply.json()["StatusCode"] == 60, reply.text
        return False
    assert reply.status_code == 200, reply.text
    return True


def test_roles_match_whole_values_of_our_vo(strict: Strict) -> None:
    lookalikes = [
        strict.x509("Prod Robot Jr"),
        strict.x509("Pilot Factoryfan"),
        strict.token(groups=["atlas", "cms/production"]),
        strict.token("atlas.production-readers", groups=["atlas", "atlas/production-readers"]),
        strict.token(name="pilot factory", sub="u-pf"),
        strict.plain(
            FRONT_END, **{"X-SSL-Client-S-DN": "/CN=Somebody", "X-SSL-Client-FQANs": "/cms/Role=production"}
        ),
        strict.plain(
            FRONT_END,
            **{"X-SSL-Client-S-DN": "/CN=Somebody", "X-SSL-Client-FQANs": "/atlas/Role=production-readers"},
        ),
        strict.plain(
            FRONT_END, **{"X-SSL-Client-S-DN": "/CN=Somebody", "X-SSL-Client-FQANs": "/atlas/Role=pilots"}
        ),
    ]
    for client in lookalikes:
        with client:
            seen = _seen(client)
            assert seen["PANDA_PRODUCTION_ROLE"] is False, seen
            assert not _may_pull(client), seen
    genuine = [
        strict.x509("Prod Robot"),
        strict.x509("Pilot Factory"),
        strict.token("atlas.production", groups=["atlas", "atlas/production"]),
        strict.plain(
            FRONT_END, **{"X-SSL-Client-S-DN": "/CN=Somebody", "X-SSL-Client-FQANs": "/atlas/Role=production"}
        ),
        strict.plain(FRONT_END, **{"X-SSL-Client-S-DN": PILOT_DN + "/CN=12345"}),  # a proxy of a listed DN
    ]
    for client in genuine:
        with client:
            assert _may_pull(client), _seen(client)


# --- 4. a pilot credential is not a user ----------------------------------------------------


def test_a_pilot_certificate_pulls_jobs_but_submits_nothing(strict: Strict) -> None:
    with strict.x509() as jane, strict.x509("Pilot Factory") as pilot:
        panda_id = _submit(jane, site="PILOT_SITE")
        jobs = pilot.post("/api/v1/job/submit", json={"jobs": json.dumps([state_list(make_job())])})
        assert jobs.status_code == 403 and "role user required" in jobs.json()["message"], jobs.text
        task = pilot.post("/api/v1/task/submit", json={"task_parameters": prun_params("user.pilot.made/")})
        assert task.status_code == 403 and "role user required" in task.json()["message"], task.text
        kill = pilot.post("/api/v1/job/kill", json={"job_ids": [panda_id]})
        assert kill.status_code == 403, kill.text
        got = pilot.post("/server/panda/getJob", data={"siteName": "PILOT_SITE", "prodSourceLabel": "user"})
        assert got.json()["PandaID"] == panda_id


# --- 5. updates only from the credential the job was dispatched to --------------------------


def test_only_the_dispatching_credential_reports_on_a_job(strict: Strict) -> None:
    with (
        strict.x509() as jane,
        strict.x509("Pilot Factory") as pilot_a,
        strict.x509("Pilot Two") as pilot_b,
        strict.x509("Prod Robot") as harvester,
        strict.token("atlas.production", groups=["atlas", "atlas/production"]) as production,
    ):
        first = _submit(jane, site="BIND_SITE")
        second = _submit(harvester, site="BIND_SITE", prodSourceLabel="managed")
        got = pilot_a.post(
            "/server/panda/getJob", data={"siteName": "BIND_SITE", "prodSourceLabel": "user", "node": "wn-a"}
        )
        assert got.json()["PandaID"] == first
        update = {"jobId": str(first), "state": "failed", "attemptNr": "0", "pilotErrorCode": "1305"}
        refused = pilot_b.post("/server/panda/updateJob", data=update)
        assert refused.status_code == 403, refused.text
        assert (
            refused.json()["StatusCode"] == 70
            and "dispatched to another credential" in refused.json()["errorDialog"]
        )
        v1_refused = pilot_b.post("/api/v1/pilot/update_job", json={"job_id": first, "job_status": "failed"})
        assert v1_refused.status_code == 403 and v1_refused.json()["success"] is False
        assert "dispatched to another credential" in v1_refused.json()["message"]
        bulk = pilot_b.post("/server/panda/updateJobsInBulk", data={"jobList": json.dumps([update])}).json()
        assert bulk[1][0]["StatusCode"] == 70, bulk
        v1_bulk = pilot_b.post(
            "/api/v1/pilot/update_jobs_bulk", json={"job_list": [{"job_id": first, "job_status": "failed"}]}
        ).json()
        assert v1_bulk["data"][0]["success"] is False and v1_bulk["data"][0]["data"]["StatusCode"] == 70
        ranges = pilot_b.post("/server/panda/getEventRanges", data={"pandaID": str(first)})
        assert ranges.status_code == 403 and ranges.json()["StatusCode"] == 70
        # A production credential does not speak for a pilot-dispatched job either.
        assert production.post("/server/panda/updateJob", data=update).status_code == 403
        assert _status(strict, first) == "sent"
        # The pilot that got it: its state change, then heartbeats (the one-statement path).
        running = {"jobId": str(first), "state": "running", "attemptNr": "0"}
        for _ in range(2):
            ok = pilot_a.post("/server/panda/updateJob", data=running)
            assert ok.status_code == 200 and ok.json()["StatusCode"] == 0, ok.text
        heartbeat = pilot_b.post("/server/panda/updateJob", data=running)
        assert heartbeat.status_code == 403 and heartbeat.json()["StatusCode"] == 70
        # Harvester takes a job with the production credential: any production identity may
        # report on it (the instance and its pilots), a pilot credential may not.
        acquired = harvester.post(
            "/api/v1/pilot/acquire_jobs",
            json={"site_name": "BIND_SITE", "prod_source_label": "managed", "node": "hv"},
        ).json()
        assert [j["PandaID"] for j in acquired["data"]["jobs"]] == [second]
        for client, allowed in ((pilot_a, False), (production, True), (harvester, True)):
            reply = client.post(
                "/api/v1/pilot/update_job", json={"job_id": second, "job_status": "running", "attempt_nr": 0}
            )
            assert reply.json()["success"] is allowed, reply.text
        final = dict(update, state="finished", pilotErrorCode="0")
        done = pilot_a.post("/server/panda/updateJob", data=final)
        assert done.json()["StatusCode"] == 0, done.text
        assert _status(strict, first) in ("finished", "failed")
        assert _status(strict, second) == "running"
