"""task/enable_jumbo_jobs over HTTP, as an operator sends it: a production credential turns
jumbo jobs on for a running event-service task and the task manager starts making them (at most
``jumbo_jobs_per_site`` on each queue); a plain user is refused and nothing changes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from pandawms.config import load_settings
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.progress import manage_tasks
from pandawms.db.schema import jobs
from pandawms.db.schema_tasks import tasks
from tests.certs import Pki
from tests.core.tasks.test_tasks import prun_params
from tests.e2e.httpd_proc import Httpd
from tests.e2e.test_v1_operator_api import BOSS_CN, _post, pki, strict

__all__ = ["pki", "strict"]  # the fixtures this module borrows


def _jumbo_jobs(rt: Runtime, task_id: int) -> list[str]:
    with rt.engine.connect() as conn:
        return sorted(
            str(site)
            for site in conn.execute(
                select(jobs.c.computingSite).where(jobs.c.jediTaskID == task_id, jobs.c.eventService == 4)
            ).scalars()
        )


def test_an_operator_enables_jumbo_jobs_and_a_plain_user_is_refused(
    strict: Httpd, pki: Pki, tmp_path: Path
) -> None:
    params = prun_params(
        "user.jdoe.es1/", nEvents=40, nEventsPerJob=20, nEventsPerRange=5, nEsConsumers=1, site=None
    )  # brokered: any of the two queues
    code, reply = _post(strict, pki, pki.proxy, "task/submit", {"task_parameters": params})
    assert code == 200 and reply["success"], reply
    task_id = reply["data"]
    rt = Runtime.from_settings(load_settings(None, {"db_url": strict.env["PANDA_DB_URL"]}))
    try:
        manage_tasks(rt)
        body = {"task_id": task_id, "jumbo_jobs_total": 3, "jumbo_jobs_per_site": 1}
        bob = pki.add_user("Bob Jones")
        for cert in (pki.proxy, bob):  # the task's owner and another user, neither production
            code, reply = _post(strict, pki, cert, "task/enable_jumbo_jobs", body)
            assert code == 403 and not reply["success"], reply
        with rt.engine.connect() as conn:
            assert (
                conn.execute(select(tasks.c.useJumbo).where(tasks.c.jediTaskID == task_id)).scalar_one()
                is None
            )
        manage_tasks(rt)
        assert _jumbo_jobs(rt, task_id) == []

        code, reply = _post(strict, pki, pki.add_user(BOSS_CN), "task/enable_jumbo_jobs", body)
        assert code == 200 and reply == {
            "success": True,
            "message": f"jumbo jobs enabled for jediTaskID={task_id} (at most 3 at a time)",
            "data": 0,
        }, reply
        manage_tasks(rt)
        # three wanted, two queues, one a queue
        assert _jumbo_jobs(rt, task_id) == ["Q_B", "TASK_Q"]
    finally:
        rt.engine.dispose()
