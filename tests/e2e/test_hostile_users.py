"""Hostile users and bad days, in strict mode over real TLS with test-made certificates.

Submitting as someone else, into someone else's task or ahead of everyone; making a browser
that holds a user's certificate act from another site; refusals the audit trail must show;
numbers no database can hold.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from pandawms.core.runtime import Runtime
from pandawms.db.schema import audit_log, jobs
from pandawms.db.schema_tasks import tasks
from tests.certs import Pki, make_pki
from tests.core.tasks.test_tasks import prun_params
from tests.dbs import BACKENDS
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list

PROD_CN = "Prod Robot"
PILOT_CN = "Pilot Factory"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Server:
    """A strict ``pandawms httpd`` and a client per certificate."""

    def __init__(self, httpd: Httpd, pki: Pki, url: str) -> None:
        self.httpd = httpd
        self.pki = pki
        self.url = url
        self.api = httpd.https + "/api/v1"
        self.legacy = httpd.https + "/server/panda"
        self._clients: list[httpx.Client] = []

    def client(self, cert: Path | None) -> httpx.Client:
        context = ssl.create_default_context(capath=str(self.pki.ca_dir))
        if cert is not None:
            context.load_cert_chain(str(cert))
        made = httpx.Client(verify=context, timeout=60)
        self._clients.append(made)
        return made

    def rows(self, table: Any, *where: Any) -> list[dict[str, Any]]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]
        finally:
            engine.dispose()

    def count(self, table: Any) -> int:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        finally:
            engine.dispose()

    def close(self) -> None:
        for made in self._clients:
            made.close()
        self.httpd.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, pki: Pki, make_runtime: Callable[..., Runtime]
) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hostile.sqlite'}"
    else:
        url = BACKENDS["postgresql"].require()
        make_runtime(url)  # the schema, every table empty
    httpd = Httpd(
        tmp_path,
        pki,
        workers=1,
        auth_mode="strict",
        db_url=url,
        data_dir=str(tmp_path / "data"),
        production_dns=f"/DC=org/DC=pandawms/OU=Users/CN={PROD_CN}",
        pilot_dns=f"/DC=org/DC=pandawms/OU=Users/CN={PILOT_CN}",
    )
    made = Server(httpd, pki, url)
    yield made
    made.close()


def _jobs(*jobs: dict[str, Any]) -> dict[str, str]:
    return {"jobs": json.dumps([state_list(job) for job in jobs])}


# --- 6: owner, task and priority are the server's -----------------------------------------


def test_ordinary_users_cannot_submit_as_others_into_their_tasks_or_ahead(server: Server, pki: Pki) -> None:
    alice = server.client(pki.add_user("Alice Smith"))
    bob_cert = pki.add_user("Bob Jones")
    bob = server.client(bob_cert)
    robot = server.client(pki.add_user(PROD_CN))
    alice_dn = "/DC=org/DC=pandawms/OU=Users/CN=Alice Smith"

    task = alice.post(
        server.api + "/task/submit", json={"task_parameters": prun_params("user.alice.t1/", site=None)}
    )
    assert task.json()["success"], task.text
    alice_task = task.json()["data"]

    # Bob as Alice, at priority 1e6: stored as Bob's, at the server's priority.
    sent = make_job(
        prodUserID=alice_dn, prodUserName="Alice Smith", assignedPriority=10**6, currentPriority=10**6
    )
    reply = bob.post(
        server.api + "/job/submit",
        json=_jobs(
            sent,
            make_job(prodSourceLabel="panda", currentPriority=10**6),
            make_job(prodSourceLabel="ptest", prodUserID=alice_dn, assignedPriority=99999),
        ),
    )
    assert reply.status_code == 200, reply.text
    ids = [answer[0] for answer in reply.json()["data"]]
    stored = {row["PandaID"]: row for row in server.rows(jobs, jobs.c.PandaID.in_(ids))}
    assert stored[ids[0]]["prodUserID"] == "/DC=org/DC=pandawms/OU=Users/CN=Bob Jones"
    assert stored[ids[0]]["prodUserName"] == "Bob Jones"
    assert (stored[ids[0]]["assignedPriority"], stored[ids[0]]["currentPriority"]) == (1000, 1000)
    assert stored[ids[1]]["currentPriority"] == 2000  # a build job, as PanDA ranks them
    assert (stored[ids[2]]["prodUserName"], stored[ids[2]]["currentPriority"]) == ("Bob Jones", 1000)

    # Bob's jobs in Alice's task (or in a task that does not exist): refused, nothing stored.
    before = server.count(jobs)
    for task_id in (alice_task, alice_task + 1000):
        refused = bob.post(server.api + "/job/submit", json=_jobs(make_job(jediTaskID=task_id)))
        assert refused.status_code == 403, refused.text
        assert f"jediTaskID={task_id}" in refused.json()["message"]
    assert server.count(jobs) == before
    # Alice's own job in her own task is fine.
    own = alice.post(server.api + "/job/submit", json=_jobs(make_job(jediTaskID=alice_task)))
    assert own.status_code == 200, own.text

    # A task whose parameters ask for a priority gets the server's.
    bob_task = bob.post(
        server.api + "/task/submit",
        json={
            "task_parameters": prun_params(
                "user.bob.t1/", site=None, currentPriority=10**6, taskPriority=10**6, userName="Alice Smith"
            )
        },
    ).json()["data"]
    (row,) = server.rows(tasks, tasks.c.jediTaskID == bob_task)
    assert (row["userName"], row["currentPriority"], row["taskPriority"]) == ("Bob Jones", 1000, 1000)
    # Nor can a retry raise it.
    retried = bob.post(
        server.api + "/task/retry", json={"task_id": bob_task, "new_parameters": {"currentPriority": 10**6}}
    )
    assert retried.json()["success"] is False and "production" in retried.json()["message"]

    # Production sets what it likes.
    prod = robot.post(
        server.api + "/job/submit",
        json=_jobs(make_job(prodSourceLabel="managed", prodUserID=alice_dn, assignedPriority=5000)),
    )
    assert prod.status_code == 200, prod.text
    (made,) = server.rows(jobs, jobs.c.PandaID == prod.json()["data"][0][0])
    assert (made["prodUserID"], made["currentPriority"]) == (alice_dn, 5000)


# --- 7: a browser made to act from another site ------------------------------------------

EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}


def _alive(server: Server, panda_id: int) -> bool:
    (row,) = server.rows(jobs, jobs.c.PandaID == panda_id)
    return row["jobStatus"] == "activated" and row["commandToPilot"] is None


def test_cross_site_forms_and_head_requests_change_nothing(server: Server, pki: Pki) -> None:
    alice = server.client(pki.add_user("Alice Smith"))
    pilot = server.client(pki.add_user(PILOT_CN))
    (panda_id,) = [
        a[0] for a in alice.post(server.api + "/job/submit", json=_jobs(make_job())).json()["data"]
    ]
    kill = server.api + "/job/kill"
    # What an HTML form on another site makes the browser send, with the user's certificate.
    forged = [
        alice.post(kill, data={"job_ids": str(panda_id)}, headers=EVIL),
        alice.post(kill, files={"job_ids": (None, str(panda_id))}, headers=EVIL),
        alice.post(
            kill + f"?job_ids={panda_id}", content=b"", headers={**EVIL, "Content-Type": "text/plain"}
        ),
        alice.post(kill, content=json.dumps({"job_ids": [panda_id]}), headers={"Origin": "null"}),
    ]
    assert [r.status_code for r in forged] == [403] * 4, [r.text for r in forged]
    assert all("cross-site request refused" in r.json()["message"] for r in forged)
    # The same forms without a browser's marks (an old browser, a plain HTTP page): still not JSON.
    for body in ({"data": {"job_ids": str(panda_id)}}, {"content": f"job_ids={panda_id}".encode()}):
        plain = alice.post(
            kill, **body, headers={"Content-Type": "text/plain"} if "content" in body else None
        )
        assert plain.status_code == 415 and "application/json" in plain.json()["message"], plain.text
    task = alice.post(
        server.api + "/task/submit",
        data={"task_parameters": json.dumps(prun_params("user.alice.csrf/", site=None))},
        headers=EVIL,
    )
    assert task.status_code == 403, task.text
    head = alice.head(kill + f"?job_ids={panda_id}")
    assert head.status_code == 405
    assert _alive(server, panda_id)
    assert server.count(tasks) == 0

    # The legacy API: a pilot's form without browser marks works; from another site it does not,
    # and nothing that changes state answers GET or HEAD.
    site = {"siteName": "TEST_SITE", "prodSourceLabel": "user"}
    legacy_forged = pilot.post(
        server.legacy + "/getJob", data=site, headers={**EVIL, "Accept": "application/json"}
    )
    assert legacy_forged.status_code == 403 and legacy_forged.json()["StatusCode"] == 70, legacy_forged.text
    by_get = pilot.get(server.legacy + "/getJob", params=site, headers={"Accept": "application/json"})
    assert by_get.status_code == 405 and "needs POST" in by_get.json()["errorDialog"]
    assert pilot.head(server.legacy + "/getJob", params=site).status_code == 405
    assert pilot.get(server.legacy + "/isAlive").text == "alive=yes"
    assert _alive(server, panda_id)
    got = pilot.post(server.legacy + "/getJob", data=site, headers={"Accept": "application/json"})
    assert got.json()["PandaID"] == panda_id

    # What panda-client sends still works: JSON (with a VO name as Origin in token mode), and
    # the multipart sandbox upload.
    assert alice.post(kill, json={"job_ids": [panda_id]}, headers={"Origin": "atlas"}).json()["data"] == [
        True
    ]
    upload = alice.post(
        server.api + "/file_server/upload_cache_file", files={"file": ("jobO.1234.tar.gz", b"sandbox")}
    )
    assert upload.status_code == 200 and upload.json()["success"], upload.text
    cross_upload = alice.post(
        server.api + "/file_server/upload_cache_file",
        files={"file": ("jobO.5678.tar.gz", b"sandbox")},
        headers=EVIL,
    )
    assert cross_upload.status_code == 403


# --- 8: refusals in the audit trail, and the job filter -------------------------------------


def test_refusals_are_audited_and_the_job_filter_is_exact(server: Server, pki: Pki) -> None:
    alice = server.client(pki.add_user("Alice Smith"))
    bob = server.client(pki.add_user("Bob Jones"))
    anonymous = httpx.post(server.httpd.base + "/api/v1/job/submit", json=_jobs(make_job()))
    assert anonymous.status_code == 401
    task_id = alice.post(
        server.api + "/task/submit", json={"task_parameters": prun_params("user.alice.audit/", site=None)}
    ).json()["data"]
    retry = bob.post(server.api + "/task/retry", json={"task_id": task_id})
    assert retry.json()["success"] is False and retry.json()["data"] == 3, retry.text
    ids = [
        a[0]
        for a in alice.post(server.api + "/job/submit", json=_jobs(make_job(), make_job())).json()["data"]
    ]
    assert bob.post(server.api + "/job/kill", json={"job_ids": ids}).json()["data"] == [False, False]
    assert alice.post(server.api + "/job/kill", json={"job_ids": [ids[0]]}).json()["data"] == [True]

    rows = server.rows(audit_log)
    by = {(r["method"], r["identity"].rsplit("CN=", 1)[-1], r["outcome"]) for r in rows}
    assert ("job/submit", "anonymous", "refused") in by
    assert ("task/retry", "Bob Jones", "refused") in by
    assert ("job/kill", "Bob Jones", "refused") in by
    assert ("job/kill", "Alice Smith", "ok") in by
    assert not any(r["outcome"] == "ok" and "Bob Jones" in r["identity"] for r in rows), rows

    # task_id=N and jobs=N (a count) are not about job N; only job targets are.
    listed = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit", "--job", str(task_id)],
        env=server.httpd.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()[1:]
    assert not [line for line in listed if "task/" in line], listed
    about_job = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit", "--job", str(ids[0])],
        env=server.httpd.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()[1:]
    assert len(about_job) == 3 and all(str(ids[0]) in line for line in about_job), about_job
    assert sorted(line.split()[2] for line in about_job) == ["job/kill", "job/kill", "job/submit"]


# --- 14: numbers no database can hold -----------------------------------------------------


def test_numbers_out_of_range_are_refusals_not_500s(server: Server, pki: Pki) -> None:
    alice = server.client(pki.add_user("Alice Smith"))
    pilot = server.client(pki.add_user(PILOT_CN))
    (panda_id,) = [
        a[0] for a in alice.post(server.api + "/job/submit", json=_jobs(make_job())).json()["data"]
    ]
    huge = str(10**30)
    json_accept = {"Accept": "application/json"}
    for method in ("getStatus", "checkJobStatus"):
        for ids in (huge, "1e30", f"{panda_id},{huge}", "inf", "nan"):
            for reply in (
                pilot.post(server.legacy + f"/{method}", data={"ids": ids}, headers=json_accept),
                pilot.get(server.legacy + f"/{method}", params={"ids": ids}, headers=json_accept),
            ):
                assert reply.status_code == 400, (method, ids, reply.status_code, reply.text)
                assert reply.json()["StatusCode"] != 0 and "ids" in reply.json()["errorDialog"]
    for params in ({"job_ids": huge}, {"job_ids": "1e400"}):
        reply = alice.get(server.api + "/job/get_status", params=params)
        # v1 answers argument errors in the envelope (HTTP 200, success false), as the real server
        assert reply.status_code == 200 and reply.json()["success"] is False, reply.text
        assert "job_ids" in reply.json()["message"], reply.text
    for value in (10**30, 1e30):
        reply = alice.post(server.api + "/job/get_description", json={"job_ids": [value]})
        assert reply.status_code == 200 and reply.json()["success"] is False, reply.text
    for mem in ("1e400", huge, "nan"):
        reply = pilot.post(
            server.legacy + "/getJob", data={"siteName": "TEST_SITE", "mem": mem}, headers=json_accept
        )
        assert reply.status_code == 400 and "mem" in reply.json()["errorDialog"], reply.text
    submitted = alice.post(server.api + "/job/submit", json=_jobs(make_job(cpuConsumptionTime="1e400")))
    assert submitted.status_code == 200 and submitted.json()["success"] is False, submitted.text
    assert "cpuConsumptionTime" in submitted.json()["message"]

    # A heartbeat is never lost for one bad metric: the number is dropped, never stored.
    got = pilot.post(
        server.legacy + "/getJob",
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user"},
        headers=json_accept,
    ).json()
    assert got["PandaID"] == panda_id
    update = pilot.post(
        server.legacy + "/updateJob",
        data={"jobId": panda_id, "state": "running", "cpuConsumptionTime": "1e400", "maxRSS": "inf"},
        headers=json_accept,
    )
    assert update.status_code == 200 and update.json()["StatusCode"] == 0, update.text
    (row,) = server.rows(jobs, jobs.c.PandaID == panda_id)
    assert row["jobStatus"] == "running" and row["cpuConsumptionTime"] in (None, 0) and row["maxRSS"] is None
    assert "Traceback" not in (server.httpd.log_dir / "panda-httpd.log").read_text()
