"""Job reassign, pilot commands and the offline script (core/jobs/commands.py, core/jobs/offline_script.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pandawms.core.jobs.commands import reassign_jobs, set_command
from pandawms.core.jobs.dispatch import DispatchRequest, acquire_jobs
from pandawms.core.jobs.heartbeat import PilotUpdate, update_job
from pandawms.core.jobs.offline_script import offline_script
from pandawms.core.jobs.read import get_descriptions
from pandawms.core.jobs.submit import submit_jobs
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime
from pandawms.db.schema import job_status_log, jobs
from pandawms.model.identity import Identity
from tests.jobs import make_file, make_job

JANE = Identity(dn="/DC=org/CN=Jane Doe", method="x509")
JOHN = Identity(dn="/DC=org/CN=John Roe", method="x509")


def _queues(rt: Runtime, *names: str) -> None:
    spec = {
        n: {"name": n, "status": "online", "state": "ACTIVE", "type": "unified", "corecount": 1}
        for n in names
    }
    load_queues(rt, json.dumps(spec))


def _row(rt: Runtime, panda_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.PandaID == panda_id)).mappings().one())


def _submit(rt: Runtime, **attrs: Any) -> int:
    ((panda_id, _, _),) = submit_jobs(rt, [make_job(**attrs)], JANE)
    return int(panda_id)


def test_reassign_to_a_queue_or_back_to_brokerage(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url, auth_mode="strict")
    _queues(rt, "Q_A", "Q_B")
    first = _submit(rt, site="Q_A")
    assert _row(rt, first)["jobStatus"] == "activated"
    assert reassign_jobs(rt, [first, 999999], JOHN, "Q_B") == [False, False]
    assert reassign_jobs(rt, [first], JANE, "NO_SUCH_Q") == [False]
    assert reassign_jobs(rt, [first], JANE, "Q_B") == [True]
    row = _row(rt, first)
    assert (row["jobStatus"], row["computingSite"]) == ("activated", "Q_B")
    with rt.engine.connect() as conn:
        moves = [
            (r.oldStatus, r.jobStatus, r.reason)
            for r in conn.execute(
                select(job_status_log).where(job_status_log.c.PandaID == first).order_by(job_status_log.c.id)
            )
        ]
    assert moves[-2:] == [
        ("activated", "defined", "reassigned by Jane Doe"),
        ("defined", "activated", "reassigned by Jane Doe to Q_B"),
    ]
    # Without a queue the brokerage chooses again among the queues that fit.
    assert reassign_jobs(rt, [first], JANE) == [True]
    assert _row(rt, first)["computingSite"] in ("Q_A", "Q_B")
    # A job a pilot holds is not reassigned.
    (got,) = acquire_jobs(
        rt, DispatchRequest(site=_row(rt, first)["computingSite"], n_jobs=1, prod_source_label="user"), JANE
    )
    assert reassign_jobs(rt, [got["PandaID"]], JANE, "Q_A") == [False]


def test_a_pilot_command_is_delivered_once_and_a_kill_stays(make_runtime: Any, db_url: str) -> None:
    rt = make_runtime(db_url)
    _queues(rt, "Q_A")
    panda_id = _submit(rt, site="Q_A")
    (job,) = acquire_jobs(rt, DispatchRequest(site="Q_A", n_jobs=1, prod_source_label="user"), JANE)
    assert update_job(rt, PilotUpdate(panda_id, "running", job["attemptNr"])).command == "NULL"
    assert set_command(rt, panda_id, "x" * 251)[0] is False
    assert set_command(rt, 999999, "debug") == (False, "PandaID=999999 not found in active jobs")
    assert set_command(rt, panda_id, "debug") == (True, f"command=debug is set to PandaID={panda_id}")
    assert update_job(rt, PilotUpdate(panda_id, "running", job["attemptNr"])).command == "debug"
    assert update_job(rt, PilotUpdate(panda_id, "running", job["attemptNr"])).command == "NULL"
    # The full update path (a state change) delivers it once too.
    assert set_command(rt, panda_id, "softkill")[0]
    assert update_job(rt, PilotUpdate(panda_id, "transferring", job["attemptNr"])).command == "softkill"
    assert update_job(rt, PilotUpdate(panda_id, "transferring", job["attemptNr"])).command == "NULL"
    assert set_command(rt, panda_id, "tobekilled")[0]
    for _ in range(2):
        assert update_job(rt, PilotUpdate(panda_id, "transferring", job["attemptNr"])).command == "tobekilled"
    assert set_command(rt, panda_id, "debug") == (False, f"PandaID={panda_id} is being killed")


def test_offline_script_runs_the_job_with_its_inputs(sqlite_rt: Runtime, tmp_path: Path) -> None:
    files = [
        make_file("data.1.root", "input", scope="mc23", GUID="abc"),
        make_file("data.2.root", "input", scope="mc23"),
        make_file("user.jd.lib.tgz", "input", scope="user.jd"),
        make_file("out.root", "output"),
    ]
    panda_id = _submit(
        sqlite_rt,
        files=files,
        transformation="http://127.0.0.1:1/trf/user/runGen-00-00-02",
        jobParameters="-i \"['data.1.root', 'data.2.root']\" -o out.root -p 'echo $x; rm -rf /'",
        AtlasRelease="Atlas-24.0.1",
        homepackage="AnalysisTransforms-AthAnalysis_24.0.1",
        cmtConfig="x86_64-el9-gcc13-opt@el9",
        coreCount=4,
    )
    (job,) = get_descriptions(sqlite_rt, [panda_id], include_archive=True)
    assert job is not None
    script = offline_script(job)
    assert script.startswith("#!/bin/bash\n")
    assert "data_dids=(mc23:data.1.root mc23:data.2.root)" in script
    assert "rucio download user.jd:user.jd.lib.tgz --no-subdir" in script
    assert "wget http://127.0.0.1:1/trf/user/runGen-00-00-02 || exit 1" in script
    assert "asetup --platform=x86_64-el9-gcc13-opt AthAnalysis,24.0.1" in script
    assert "export ATHENA_PROC_NUMBER=4" in script
    assert "./runGen-00-00-02 -i \"['data.1.root', 'data.2.root']\" -o out.root" in script
    assert "atlasLocalSetup.sh -c el9 -r" in script
    path = tmp_path / "rerun.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, timeout=30).returncode == 0
    # Without ALRB the script says so and stops before doing anything.
    run = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )
    assert run.returncode == 1 and "setupATLAS is required" in run.stdout
    assert offline_script({**job, "transformation": None}).startswith("ERROR")
