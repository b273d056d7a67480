"""A batch of state changes writes what the same updates one by one write, on every backend.

The group commit's batch of full updates (:func:`pandawms.core.jobs.heartbeat._full_batch`) reads
every job of the batch with one locked statement and writes the status log and the pilots'
reports once at the end of its transaction (:class:`pandawms.core.jobs.transitions.DeferredWrites`).
Run here directly (the worker's thread would run it the same way) against the one-by-one path
on twin jobs: the answers, the job rows, the status logs and the report tables must match,
duplicates and unknown jobs in a batch included.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from pandawms.core.jobs import dispatch, heartbeat, submit
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.runtime import Runtime
from pandawms.db.schema import job_metadata, job_output_reports, job_status_log, jobs, pilot_logs
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")
N = 6


def _jobs(rt: Runtime, label: str) -> list[int]:
    made = [
        make_job(
            jobName=f"{label}-{i}",
            files=[make_file(f"{label}-{i}.root"), make_file(f"{label}-{i}.log", "log")],
        )
        for i in range(N)
    ]
    ids = [answer[0] for answer in submit.submit_jobs(rt, made, ALICE)]
    req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=N, prod_source_label="user", node="wn1")
    assert sorted(j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)) == sorted(ids)
    return sorted(ids)


def _report(label: str, i: int) -> str:
    return json.dumps(
        {
            f"{label}-{i}.root": {"guid": f"g-{i}", "fsize": 10 + i, "adler32": "0a1b2c3d"},
            f"{label}-{i}.log": {"guid": f"l-{i}", "fsize": 5, "adler32": "01020304"},
        }
    )


def _rounds(ids: list[int], label: str, unknown: int) -> list[list[PilotUpdate]]:
    """Three rounds of updates for one set of jobs; each round is one batch."""

    def up(i: int, state: str, **kw: Any) -> PilotUpdate:
        return PilotUpdate(
            ids[i], state, 0, {"modificationHost": f"wn-{i}", "cpuConsumptionTime": 7 + i}, **kw
        )

    starting = [up(i, "starting") for i in range(N)]
    running = [up(i, "running") for i in range(N)] + [up(0, "running"), PilotUpdate(unknown, "running", 0)]
    finals = [
        up(i, "finished", report=_report(label, i), metadata=f'{{"job": {i}}}', pilot_log=f"log {i}")
        for i in range(3)
    ]
    finals.append(up(3, "failed", report=_report(label, 3), pilot_log="failed log"))
    finals.append(up(4, "finished", report=_report(label, 4), metadata='{"first": 1}'))
    finals.append(up(4, "finished", report=_report(label, 4), metadata='{"second": 2}'))  # alreadydone
    other_attempt = up(5, "running")
    other_attempt.attempt_nr = 3  # another attempt's pilot: tobekilled, nothing changes
    finals.append(other_attempt)
    return [starting, running, finals]


def _state(rt: Runtime, ids: list[int]) -> list[Any]:
    """Everything the updates wrote for ``ids``, with PandaIDs replaced by their position."""
    pos = {pid: i for i, pid in enumerate(ids)}
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.PandaID, jobs.c.jobStatus, jobs.c.modificationHost, jobs.c.cpuConsumptionTime)
            .where(jobs.c.PandaID.in_(ids))
            .order_by(jobs.c.PandaID)
        ).all()
        history = conn.execute(
            select(job_status_log.c.PandaID, job_status_log.c.oldStatus, job_status_log.c.jobStatus)
            .where(job_status_log.c.PandaID.in_(ids))
            .order_by(job_status_log.c.id)
        ).all()
        reports = conn.execute(
            select(job_output_reports.c.PandaID, job_output_reports.c.jobStatus).where(
                job_output_reports.c.PandaID.in_(ids)
            )
        ).all()
        metas = conn.execute(
            select(job_metadata.c.PandaID, job_metadata.c.metaData).where(job_metadata.c.PandaID.in_(ids))
        ).all()
        logs = conn.execute(
            select(pilot_logs.c.PandaID, pilot_logs.c.log).where(pilot_logs.c.PandaID.in_(ids))
        ).all()
    return [
        [(pos[r[0]], *r[1:]) for r in rows],
        [[(r[1], r[2]) for r in history if r[0] == pid] for pid in ids],
        sorted((pos[r[0]], r[1]) for r in reports),
        sorted((pos[r[0]], r[1]) for r in metas),
        sorted((pos[r[0]], r[1]) for r in logs),
    ]


def test_a_batch_writes_exactly_what_one_by_one_writes(rt: Runtime) -> None:
    alone_ids, batch_ids = _jobs(rt, "alone"), _jobs(rt, "batch")
    unknown = max(batch_ids) + 10_000
    for alone_round, batch_round in zip(
        _rounds(alone_ids, "alone", unknown), _rounds(batch_ids, "batch", unknown), strict=True
    ):
        want = [heartbeat.update_job(rt, upd, fast=False) for upd in alone_round]
        got = heartbeat._full_batch(None, [(rt, upd) for upd in batch_round])
        assert got == want
        assert _state(rt, batch_ids) == _state(rt, alone_ids)
    final = _state(rt, batch_ids)
    assert [row[1] for row in final[0]] == [
        "finished",
        "finished",
        "finished",
        "failed",
        "finished",
        "running",
    ]
    assert final[1][0] == [
        (None, "activated"),
        ("activated", "sent"),
        ("sent", "starting"),
        ("starting", "running"),
        ("running", "holding"),
        ("holding", "finished"),
    ]
    assert final[3][-1] == (4, '{"first": 1}')  # the second report of a finished job was refused
    assert got[-2].command == "alreadydone" and got[-1].command == "tobekilled"
