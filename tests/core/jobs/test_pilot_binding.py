"""Dispatch binding in the group commit: refused updates fail alone, on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from pandawms.api.errors import status_of
from pandawms.core.jobs import dispatch, pilot_binding, submit
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job, update_job_grouped
from pandawms.core.runtime import Runtime
from pandawms.db.schema import jobs
from pandawms.model.identity import Identity
from tests.jobs import make_job

JANE = Identity(dn="/DC=org/CN=Jane Doe", roles=frozenset({"user"}), method="x509")
PILOT_A = Identity(dn="/DC=org/CN=Pilot A", roles=frozenset({"pilot"}), method="x509")
PILOT_B = Identity(dn="/DC=org/CN=Pilot A 2", roles=frozenset({"pilot"}), method="x509")


def _run(rt: Runtime, updates: list[tuple[int, str, Identity]]) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(
                update_job_grouped(rt, PilotUpdate(pid, state, 0, caller=pilot_binding.caller_for(rt, who)))
                for pid, state, who in updates
            ),
            return_exceptions=True,
        )

    return asyncio.run(main())


def test_refused_updates_fail_alone_in_a_batch(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    ids = [a[0] for a in submit.submit_jobs(rt, [make_job() for _ in range(6)], JANE)]
    req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=6, prod_source_label="user", node="wn-a")
    taken = [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, PILOT_A)]
    assert sorted(taken) == sorted(ids)
    with rt.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.dispatchDN, jobs.c.dispatchRole, jobs.c.dispatchNode)).all()
    assert set(rows) == {("/DC=org/CN=Pilot A", "pilot", "wn-a")}
    # State changes (full path), then heartbeats (one-statement path), mixed with a namesake's.
    for state in ("running", "running"):
        outcomes = _run(rt, [(pid, state, PILOT_B if i % 2 else PILOT_A) for i, pid in enumerate(ids)])
        for i, outcome in enumerate(outcomes):
            if i % 2:
                assert isinstance(outcome, pilot_binding.NotDispatchedToYou), outcome
                assert outcome.code == 70 and status_of(outcome) == 403
            else:
                assert outcome.status_code == 0, outcome
    with rt.engine.connect() as conn:
        statuses = dict(conn.execute(select(jobs.c.PandaID, jobs.c.jobStatus)).all())
    assert [statuses[pid] for pid in ids] == ["running", "sent"] * 3
    # The server's own updates carry no caller and are not bound.
    assert update_job(rt, PilotUpdate(ids[1], "running", 0)).status_code == 0
    # Open mode binds nobody (this empties the tables: last).
    assert pilot_binding.caller_for(make_runtime(db_url), PILOT_B) is None
