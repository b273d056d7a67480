"""Two runtimes in one process never share per-process state (answers, objects, rules).

The server keeps answers for a few seconds and objects for its life; they hang on the Runtime,
so a second runtime (a test next to its server, a tool, two apps on two databases) neither sees
the first one's answers nor reuses its clients, ciphers, limiters or retry rules. Before, these
lived in module globals keyed by database URL, which made two runtimes on one URL one cache.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pandawms.config import load_settings
from pandawms.core import dbthreads
from pandawms.core.creds import access_token, secrets
from pandawms.core.jobs import dispatch, submit
from pandawms.core.jobs import stats as job_stats
from pandawms.core.queues import catalogue, shares
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.inputs import ddm_for
from pandawms.db.versioning import init_schema
from pandawms.model import retry_rules
from pandawms.model.identity import Identity
from tests.jobs import make_job

WHO = Identity(dn="/CN=Runtime Tester", roles=frozenset({"user", "production"}), method="x509")
QUEUES = {"SITE_A": {"status": "online", "cloud": "US"}}


def _runtime(
    tmp_path: Path, db: str, data: str, overrides: dict[str, object] | None = None, init: bool = True
) -> Runtime:
    settings = load_settings(
        None,
        {
            "db_url": f"sqlite:///{tmp_path / db}.sqlite",
            "data_dir": str(tmp_path / data),
            **(overrides or {}),
        },
    )
    rt = Runtime.from_settings(settings)
    if init:
        init_schema(rt.engine)
    return rt


@pytest.fixture
def two_on_one_db(tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    a = _runtime(tmp_path, "one", "a", {"global_shares": "MC=50,User=50"})
    b = _runtime(tmp_path, "one", "b", {"global_shares": "MC=50,User=50"}, init=False)
    yield a, b
    a.engine.dispose()
    b.engine.dispose()


def _managed(n: int, share: str = "MC") -> list[dict[str, object]]:
    return [make_job(site="SITE_A", prodSourceLabel="managed", gshare=share) for _ in range(n)]


def test_two_runtimes_on_one_database_never_share_an_answer(two_on_one_db: tuple[Runtime, Runtime]) -> None:
    a, b = two_on_one_db
    catalogue.load_queues(a, json.dumps(QUEUES))
    submit.submit_jobs(a, _managed(3), WHO)
    dispatch.acquire_jobs(a, dispatch.DispatchRequest("SITE_A", n_jobs=1, prod_source_label="managed"), WHO)
    # a asks first and keeps its answers...
    assert job_stats.active_by_site(a)["SITE_A"]["sent"] == 1
    assert dispatch.count_recently_sent(a, "SITE_A") == 1
    assert shares.running_by_share(a) == {}  # counted by a's dispatch, before it sent the job
    assert [q.name for q in catalogue.list_queues(a)] == ["SITE_A"]
    # ...then the database changes behind it
    dispatch.acquire_jobs(b, dispatch.DispatchRequest("SITE_A", n_jobs=2, prod_source_label="managed"), WHO)
    catalogue.load_queues(b, json.dumps({**QUEUES, "SITE_B": {"status": "online"}}))
    # b computes its own answers (it was never given a's), while a serves what it kept
    assert job_stats.active_by_site(b)["SITE_A"]["sent"] == 3
    assert dispatch.count_recently_sent(b, "SITE_A") == 3
    assert shares.running_by_share(b) == {"MC": 1}  # counted by b's dispatch, after a's job
    assert shares.running_by_share(b, fresh=True) == {"MC": 3}
    assert [q.name for q in catalogue.list_queues(b)] == ["SITE_A", "SITE_B"]
    assert job_stats.active_by_site(a)["SITE_A"]["sent"] == 1
    assert dispatch.count_recently_sent(a, "SITE_A") == 1
    assert [q.name for q in catalogue.list_queues(a)] == ["SITE_A"]
    assert shares.running_by_share(a) == {}
    # forgetting is per runtime too
    job_stats.clear_cache(a)
    assert job_stats.active_by_site(a)["SITE_A"]["sent"] == 3
    # each orders the shares by what it counted itself
    assert shares.dispatch_order(a) == ["MC", "User"] and shares.dispatch_order(b) == ["User", "MC"]
    assert {"job_stats", "sent", "running_by_share", "queues", "shares.targets"} <= a.cache.kinds()
    assert a.cache is not b.cache


def test_two_runtimes_keep_their_own_objects(tmp_path: Path) -> None:
    rucio = {
        "ddm_rucio_host": "http://127.0.0.1:9",
        "ddm_rucio_account": "root",
        "ddm_rucio_username": "u",
        "ddm_rucio_password": "p",
    }
    a = _runtime(tmp_path, "a", "a", {"db_pool_size": 3, **rucio})
    b = _runtime(tmp_path, "b", "b", {"db_pool_size": 5, **rucio})
    try:
        assert ddm_for(a) is ddm_for(a) and ddm_for(a) is not ddm_for(b)
        # each runtime's own secrets key (<data_dir>/secrets.key), its own cipher
        secrets.set_secret(a, "/CN=Owner", "k", "from a")
        secrets.set_secret(b, "/CN=Owner", "k", "from b")
        assert secrets.get_secrets(a, "/CN=Owner") == {"k": "from a"}
        assert secrets.get_secrets(b, "/CN=Owner") == {"k": "from b"}
        assert (tmp_path / "a" / "secrets.key").read_bytes() != (tmp_path / "b" / "secrets.key").read_bytes()

        async def limiters() -> tuple[float, float, bool]:
            await dbthreads.run_db(a, lambda: None)
            await dbthreads.run_db(b, lambda: None)
            first = dbthreads._limiter(a)
            return first.total_tokens, dbthreads._limiter(b).total_tokens, first is dbthreads._limiter(a)

        assert asyncio.run(limiters()) == (3, 5, True)
        for kind in ("ddm", "secrets.fernet", "dbthreads.limiter"):
            assert kind in a.cache.kinds() and kind in b.cache.kinds()
    finally:
        a.engine.dispose()
        b.engine.dispose()


def test_retry_rules_belong_to_the_runtime_that_loaded_them(tmp_path: Path) -> None:
    path = tmp_path / "retry.json"
    path.write_text(
        json.dumps([{"name": "exit-3", "source": "exeErrorCode", "codes": [3], "action": "retry"}])
    )
    a = _runtime(tmp_path, "a", "a", {"retry_rules": str(path)})
    b = _runtime(tmp_path, "b", "b")
    try:
        assert [r.name for r in a.retry_rules] == ["exit-3"]
        assert b.retry_rules == retry_rules.DEFAULT_RULES
        job = {"exeErrorCode": 3, "jobDispatcherErrorCode": 100, "prodSourceLabel": "user"}
        decided_a, decided_b = retry_rules.decide(job, a.retry_rules), retry_rules.decide(job, b.retry_rules)
        assert decided_a is not None and decided_a.name == "exit-3"
        assert decided_b is not None and decided_b.name == "lost-heartbeat"
        # A Runtime made without from_settings reads its rules from its settings when first asked.
        direct = Runtime(engine=a.engine, settings=a.settings)
        assert [r.name for r in direct.retry_rules] == ["exit-3"]
    finally:
        a.engine.dispose()
        b.engine.dispose()


class _Issuer(BaseHTTPRequestHandler):
    """A client-credentials token endpoint on loopback that counts what it grants."""

    grants = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        with self.lock:
            type(self).grants += 1
            token = f"token-{type(self).grants}-{form.get('client_id')}"
        body = json.dumps({"access_token": token, "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        return


def test_each_runtime_asks_for_its_own_access_token(tmp_path: Path) -> None:
    _Issuer.grants = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Issuer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    issuer: dict[str, object] = {
        "token_endpoint": f"http://127.0.0.1:{httpd.server_address[1]}/token",
        "token_client_id": "pandawms",
        "token_client_secret": "s3cret",
    }
    a = _runtime(tmp_path, "a", "a", issuer)
    b = _runtime(tmp_path, "b", "b", issuer)
    try:
        first = access_token.access_token(a, None)
        assert access_token.access_token(a, None) == first  # reused by a
        assert access_token.access_token(b, None) != first  # b never sees a's token
        assert _Issuer.grants == 2
    finally:
        httpd.shutdown()
        httpd.server_close()
        a.engine.dispose()
        b.engine.dispose()


def test_each_runtime_has_its_own_group_commit(tmp_path: Path) -> None:
    a, b = _runtime(tmp_path, "a", "a"), _runtime(tmp_path, "b", "b")
    try:
        for rt, name in ((a, "job-of-a"), (b, "job-of-b")):
            submit.submit_jobs(rt, [make_job(site="SITE_A", jobName=name, prodSourceLabel="managed")], WHO)

        async def both() -> list[list[dict[str, object]]]:
            request = dispatch.DispatchRequest("SITE_A", n_jobs=5, prod_source_label="managed")
            return list(
                await asyncio.gather(
                    dispatch.acquire_jobs_async(a, request, WHO), dispatch.acquire_jobs_async(b, request, WHO)
                )
            )

        got_a, got_b = asyncio.run(both())
        # Same queue, same filters, same moment: still two batches, each on its own database.
        assert [j["jobName"] for j in got_a] == ["job-of-a"]
        assert [j["jobName"] for j in got_b] == ["job-of-b"]
        assert a.kept("dispatch.group_commit", object) is not b.kept("dispatch.group_commit", object)
    finally:
        a.engine.dispose()
        b.engine.dispose()
