"""Asynchronous requests to the server machines: storage, claims, the processor and who reads results."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from pandawms.core.ops import async_requests as requests
from pandawms.core.ops.async_processor import SERVICE, run_pending
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema_async import async_results
from pandawms.model.errors import Forbidden, NotFound
from pandawms.model.identity import Identity

ALICE = Identity(dn="/DC=org/CN=Alice Admin", roles=frozenset({"user"}), method="x509")
EVE = Identity(dn="/DC=org/CN=Eve Other", roles=frozenset({"user"}), method="x509")
BOSS = Identity(dn="/DC=org/CN=Prod Boss", roles=frozenset({"user", "production"}), method="x509")


@pytest.fixture
def nodes(db_url: str, make_runtime: Callable[..., Runtime], tmp_path: Path) -> tuple[Runtime, Runtime]:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "panda-httpd.log").write_text("start\nERROR one went wrong\nfine\nERROR two\n")
    with gzip.open(logs / "panda-httpd.log.1.gz", "wt") as handle:
        handle.write("old ERROR zipped\n")
    first = make_runtime(db_url, log_dir=str(logs))
    return dataclasses.replace(first, node="node-a"), dataclasses.replace(first, node="node-b")


def test_a_grep_runs_on_every_alive_machine_and_only_its_requester_reads_it(
    nodes: tuple[Runtime, Runtime],
) -> None:
    a, b = nodes
    assert run_pending(a) == 0 and run_pending(b) == 0  # heartbeats: both alive
    assert requests.alive_machines(a, SERVICE) == ["node-a", "node-b"]
    params = {"pattern": "ERROR [a-z]+", "log_filename": "panda-httpd.log"}
    request_id = requests.submit(a, ALICE, "grep", params, SERVICE, None, ["node-a", "node-b"])
    assert requests.result(a, ALICE, request_id)["overall_status"] == "pending"
    assert run_pending(a) == 1
    half = requests.result(a, ALICE, request_id)
    assert half["overall_status"] == "pending" and [r["machine_name"] for r in half["results"]] == ["node-a"]
    assert run_pending(b) == 1 and run_pending(b) == 0  # each machine answers once
    done = requests.result(a, ALICE, request_id)
    assert done["overall_status"] == "complete" and done["expected_machines"] == ["node-a", "node-b"]
    for row in done["results"]:
        assert row["status"] == "done" and row["return_code"] == 0 and row["attempts"] == 1
        assert row["result"] == "ERROR one went wrong\nERROR two\n" and row["truncated"] == 0
        assert isinstance(row["started_at"], str) and isinstance(row["finished_at"], str)
    with pytest.raises(Forbidden, match="not authorized to read results"):
        requests.result(a, EVE, request_id)
    with pytest.raises(Forbidden):
        requests.result(a, BOSS, request_id)  # grep results are the requester's only
    with pytest.raises(NotFound):
        requests.result(a, ALICE, "no-such-request")


def test_one_machine_a_compressed_log_and_a_missing_one(nodes: tuple[Runtime, Runtime]) -> None:
    a, b = nodes
    zipped = requests.submit(
        a,
        ALICE,
        "grep",
        {"pattern": "ERROR", "log_filename": "panda-httpd.log.1.gz"},
        None,
        "node-b",
        ["node-b"],
    )
    missing = requests.submit(
        a, ALICE, "grep", {"pattern": "x", "log_filename": "panda-none.log"}, None, "node-b", ["node-b"]
    )
    assert run_pending(a) == 0  # addressed to node-b only
    assert run_pending(b) == 2
    (row,) = requests.result(a, ALICE, zipped)["results"]
    assert (row["machine_name"], row["result"]) == ("node-b", "old ERROR zipped\n")
    (row,) = requests.result(a, ALICE, missing)["results"]
    assert row["status"] == "done" and row["return_code"] == 2 and "panda-none.log" in row["stderr"]


def test_sleep_echo_runs_once_on_any_machine_and_production_reads_it(nodes: tuple[Runtime, Runtime]) -> None:
    a, b = nodes
    request_id = requests.submit(
        a,
        BOSS,
        "sleep_echo",
        {"seconds": 0, "message": "hello"},
        SERVICE,
        requests.ANY_MACHINE,
        [],
        access="production",
    )
    assert run_pending(b) == 1 and run_pending(a) == 0
    got = requests.result(a, BOSS, request_id)
    assert got["overall_status"] == "complete" and got["expected_machines"] == ["any"]
    assert [(r["machine_name"], r["result"]) for r in got["results"]] == [("any", "hello\n")]
    other_boss = Identity(dn="/DC=org/CN=Other Boss", roles=frozenset({"production"}), method="x509")
    assert requests.result(a, other_boss, request_id)["overall_status"] == "complete"
    with pytest.raises(Forbidden):
        requests.result(a, EVE, request_id)


def test_a_run_that_died_is_retried_then_failed(nodes: tuple[Runtime, Runtime]) -> None:
    a, _ = nodes
    request_id = requests.submit(
        a, ALICE, "grep", {"pattern": "x", "log_filename": "panda-httpd.log"}, None, "node-a", ["node-a"]
    )
    for _attempt in range(requests.MAX_ATTEMPTS):
        assert requests.claim(a, request_id, "node-a")
        assert not requests.claim(a, request_id, "node-a")  # a second claimer loses
        with write_tx(a.engine) as conn:
            conn.execute(update(async_results).values(started_at=utcnow() - dt.timedelta(hours=1)))
        assert requests.recover_stale(a, "node-a", 60) == 1
    (row,) = requests.result(a, ALICE, request_id)["results"]
    assert (row["status"], row["attempts"], row["error_msg"]) == ("failed", 3, "max retries exceeded")
    assert requests.result(a, ALICE, request_id)["overall_status"] == "complete"
