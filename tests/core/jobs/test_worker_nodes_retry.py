"""Worker-node map storage, names given at submission, and the retry rules, on every backend."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pandawms.config import ConfigError, load_settings
from pandawms.core.jobs import submit
from pandawms.core.jobs.retry import retry_if_possible
from pandawms.core.jobs.watcher import fail_stale_jobs
from pandawms.core.queues import worker_nodes
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import write_tx
from pandawms.db.schema import files, job_status_log, jobs
from pandawms.db.schema_nodes import worker_node, worker_node_gpus, worker_node_queue
from pandawms.model import retry_rules
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")
#: What pilot 3.11's get_workernode_map sends (keys and types as the pilot builds them).
NODE = {
    "site": "LOCAL_SITE",
    "panda_queue": "LOCAL_Q",
    "host_name": "slot1@wn01.example.org",
    "cpu_model": "AMD EPYC 7B12 64-Core Processor",
    "n_logical_cpus": 8,
    "n_sockets": 1,
    "cores_per_socket": 4,
    "threads_per_core": 2,
    "cpu_architecture": "x86_64",
    "cpu_architecture_level": "x86-64-v3",
    "total_memory": 32000,
    "total_local_disk": 400,
    "clock_speed": 2250.0,
}


def _rows(rt: Runtime, table) -> list[dict]:  # noqa: ANN001
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_worker_node_upsert_per_site_host_and_cpu(rt: Runtime) -> None:
    assert worker_nodes.update_worker_node(rt, NODE) == "Inserted new worker node."
    # Another slot of the same node, later, with more memory reported: one row, refreshed.
    later = utcnow() + dt.timedelta(minutes=5)
    again = {**NODE, "host_name": "slot7@wn01.example.org", "total_memory": 64000}
    assert worker_nodes.update_worker_node(rt, again, now=later) == "Updated existing worker node."
    (row,) = _rows(rt, worker_node)
    assert row["host_name"] == "wn01.example.org" and row["total_memory"] == 64000
    assert row["cpu_model_normalized"] == "AMD EPYC 7B12"
    assert row["last_seen"] > row["first_seen"]
    (link,) = _rows(rt, worker_node_queue)
    assert (link["panda_queue"], link["host_name"]) == ("LOCAL_Q", "wn01.example.org")
    # Text is cut to the column size; nonsense numbers are refused with the parameter's name.
    worker_nodes.update_worker_node(rt, {**NODE, "host_name": "h" * 500, "cpu_model": "C" * 900})
    assert max(len(r["host_name"]) for r in _rows(rt, worker_node)) == 128
    with pytest.raises(PandaError, match="n_logical_cpus"):
        worker_nodes.update_worker_node(rt, {**NODE, "n_logical_cpus": "many"})
    with pytest.raises(PandaError, match="total_memory out of range"):
        worker_nodes.update_worker_node(rt, {**NODE, "total_memory": -1})
    with pytest.raises(PandaError, match="cpu_model is required"):
        worker_nodes.update_worker_node(rt, {**NODE, "cpu_model": ""})
    assert len(_rows(rt, worker_node)) == 2


def test_worker_node_gpus_and_the_queue_view(rt: Runtime) -> None:
    worker_nodes.update_worker_node(rt, NODE)
    gpu = {
        "site": "LOCAL_SITE",
        "host_name": "wn01.example.org",
        "vendor": "NVIDIA",
        "model": "NVIDIA A100-SXM4-40GB",
        "architecture": "Ampere",
        "vram": 40960,
        "framework": "CUDA",
        "framework_version": "12.4",
        "driver_version": "575.57.08",
        "count": 4,
    }
    assert worker_nodes.update_worker_node_gpu(rt, gpu) == "Inserted new worker node GPU."
    assert worker_nodes.update_worker_node_gpu(rt, {**gpu, "count": 2}) == "Updated existing worker node GPU."
    (row,) = _rows(rt, worker_node_gpus)
    assert row["count"] == 2 and row["vram"] == 40960
    with pytest.raises(PandaError, match="count is required"):
        worker_nodes.update_worker_node_gpu(rt, {**gpu, "count": None})
    (node,) = worker_nodes.nodes_of_queue(rt, "LOCAL_Q")
    assert node["host_name"] == "wn01.example.org" and [g["count"] for g in node["gpus"]] == [2]
    assert worker_nodes.nodes_of_queue(rt, "OTHER_Q") == []


def test_submission_names_log_and_outputs(rt: Runtime) -> None:
    job = make_job(
        files=[
            make_file("a.out", "output"),
            make_file("a.log.tgz", "log", dataset="", destinationDBlock="group.phys.logs"),
            make_file("b.log.tgz", "log", dataset="", destinationDBlock="", GUID="ABC-GIVEN"),
            make_file("in.root", "input", scope="mc23"),
        ],
        coreCount=8,
        minRamCount=32000,
    )
    (answer,) = submit.submit_jobs(rt, [job], ALICE)
    with rt.engine.connect() as conn:
        got = {r.lfn: r for r in conn.execute(select(files).where(files.c.PandaID == answer[0]))}
        stored = conn.execute(select(jobs).where(jobs.c.PandaID == answer[0])).mappings().one()
    assert got["a.out"].scope == "user.test" and len(got["a.out"].GUID) == 36
    assert got["a.log.tgz"].scope == "group.phys" and got["a.log.tgz"].GUID == got["a.log.tgz"].GUID.lower()
    assert got["b.log.tgz"].GUID == "ABC-GIVEN"
    assert got["in.root"].GUID is None and got["in.root"].scope == "mc23"
    assert stored["resource_type"] == "MCORE_HIMEM" and stored["prodUserID"] == ALICE.dn
    assert submit.resource_type_for(None, None) == "SCORE"
    assert submit.resource_type_for(1, 4000) == "SCORE_HIMEM"
    assert submit.resource_type_for(0, 8000) == "MCORE"


def _failed_job(rt: Runtime, **errors: object) -> int:
    job = make_job(files=[make_file("r.out", "output"), make_file("r.log.tgz", "log")])
    (answer,) = submit.submit_jobs(rt, [job], ALICE)
    with rt.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.PandaID == answer[0]).values(jobStatus="failed", **errors))
    return int(answer[0])


def _reasons(rt: Runtime, panda_id: int) -> list[str]:
    with rt.engine.connect() as conn:
        return [
            r.reason or ""
            for r in conn.execute(
                select(job_status_log.c.reason)
                .where(job_status_log.c.PandaID == panda_id)
                .order_by(job_status_log.c.id)
            )
        ]


def test_a_payload_failure_is_final_and_says_so(rt: Runtime) -> None:
    panda_id = _failed_job(rt, pilotErrorCode=1305, transExitCode="3", exeErrorCode=3)
    with write_tx(rt.engine) as conn:
        assert retry_if_possible(conn, panda_id, utcnow(), "node", rules=rt.retry_rules) is None
    assert _reasons(rt, panda_id)[-1].endswith("; no retry rule matches: final, not retried")
    killed = _failed_job(rt, pilotErrorCode=1144)
    with write_tx(rt.engine) as conn:
        assert retry_if_possible(conn, killed, utcnow(), "node", rules=rt.retry_rules) is None
    assert _reasons(rt, killed)[-1].endswith("; retry rule killed-by-panda: final, not retried")


def test_a_lost_heartbeat_is_retried_by_rule(rt: Runtime) -> None:
    job = make_job(files=[make_file("h.out", "output"), make_file("h.log.tgz", "log")])
    (answer,) = submit.submit_jobs(rt, [job], ALICE)
    panda_id = int(answer[0])
    with rt.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.PandaID == panda_id)
            .values(jobStatus="running", modificationTime=utcnow() - dt.timedelta(hours=3))
        )
        old_log = conn.execute(
            select(files.c.GUID).where(files.c.PandaID == panda_id, files.c.type == "log")
        ).scalar_one()
    counts = fail_stale_jobs(rt)
    assert counts == {"failed": 1, "retried": 1}
    with rt.engine.connect() as conn:
        child = conn.execute(select(jobs).where(jobs.c.parentID == panda_id)).mappings().one()
        new_log = conn.execute(
            select(files.c.GUID).where(files.c.PandaID == child["PandaID"], files.c.type == "log")
        ).scalar_one()
        parent = conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().one()
    assert child["jobStatus"] == "activated" and child["attemptNr"] == 1
    assert new_log and new_log != old_log
    assert parent["taskBufferErrorCode"] == 106 and "lost-heartbeat" in parent["taskBufferErrorDiag"]
    assert any(
        r.startswith("watcher: lost heartbeat")
        and "; retry rule lost-heartbeat (jobDispatcherErrorCode=100): retried as PandaID=" in r
        for r in _reasons(rt, panda_id)
    )
    assert _reasons(rt, child["PandaID"])[-1].endswith("by retry rule lost-heartbeat")


def test_operators_replace_the_rules_with_a_file(rt: Runtime, tmp_path: Path) -> None:
    rules = tmp_path / "retry.json"
    rules.write_text(
        json.dumps([{"name": "retry-exit-3", "source": "exeErrorCode", "codes": [3], "action": "retry"}])
    )
    settings = load_settings(None, {"db_url": "sqlite://", "retry_rules": str(rules)})
    other = Runtime.from_settings(settings)
    other.engine.dispose()
    assert [r.name for r in other.retry_rules] == ["retry-exit-3"]
    # The rules belong to the runtime that loaded them: this test's runtime keeps the defaults.
    assert rt.retry_rules == retry_rules.DEFAULT_RULES
    panda_id = _failed_job(rt, exeErrorCode=3)
    with write_tx(rt.engine) as conn:
        assert retry_if_possible(conn, panda_id, utcnow(), "node", rules=other.retry_rules) is not None
    lost = _failed_job(rt, jobDispatcherErrorCode=100)
    with write_tx(rt.engine) as conn:
        assert retry_if_possible(conn, lost, utcnow(), "node", rules=other.retry_rules) is None  # replaced
    with write_tx(rt.engine) as conn:
        assert retry_if_possible(conn, lost, utcnow(), "node", rules=rt.retry_rules) is not None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"name": "x"}, "must be a JSON list"),
        ([{"name": "x", "source": "exitCode", "codes": [1], "action": "retry"}], "source must be one of"),
        ([{"name": "x", "source": "exeErrorCode", "codes": [1], "action": "maybe"}], "action must be one of"),
        ([{"name": "x", "source": "exeErrorCode", "codes": [], "action": "retry"}], "codes must be"),
        (
            [{"name": "x", "source": "exeErrorCode", "codes": "*", "action": "retry", "when": 1}],
            "unknown field",
        ),
    ],
)
def test_a_bad_rule_file_stops_the_server(tmp_path: Path, rules: object, message: str) -> None:
    path = tmp_path / "retry.json"
    path.write_text(json.dumps(rules))
    settings = load_settings(None, {"db_url": "sqlite://", "retry_rules": str(path)})
    with pytest.raises(ConfigError, match=message):
        Runtime.from_settings(settings)
