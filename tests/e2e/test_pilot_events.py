"""The pilot's own event-service communicator (pilot 3.11) against the server, in strict mode.

``pilot/eventservice/communicationmanager/plugins/pandacommunicator.py`` of the pilot source
tarball takes ranges with ``getEventRanges`` and reports them with ``updateEventRanges``, through
the pilot's own ``https.request`` with its grid credential. It runs unchanged in a subprocess; the
reports are the shapes its executors send: finished ranges in a zip-file chunk (``version`` 1)
and failed ones as a flat list with an error code (``version`` 0). Another pilot's credential and
a user's are refused.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pandawms.config import load_settings
from pandawms.core.events import store
from pandawms.core.runtime import Runtime
from pandawms.db.engine import write_tx
from tests.certs import Pki, make_pki
from tests.e2e import harvester_env
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list

PILOT_DN = "/DC=org/DC=pandawms/OU=Users/CN=Pilot Factory"
OTHER_PILOT_DN = "/DC=org/DC=pandawms/OU=Users/CN=Other Factory"
PROD_DN = "/DC=org/DC=pandawms/OU=Users/CN=Production Manager"
TASK, JOBSET = 12, 3456

COMMUNICATE = r"""
import json, sys, types
sys.path.insert(0, sys.argv[1])
import pilot.info  # the pilot's own import order (https <-> dataloader)
from pilot.eventservice.communicationmanager.plugins.pandacommunicator import PandaCommunicator

comm = PandaCommunicator()
step = json.loads(sys.argv[2])
if step["kind"] == "get":
    req = types.SimpleNamespace(jobid=step["jobid"], jobsetid=step["jobsetid"], taskid=step["taskid"],
                                num_ranges=step["num_ranges"])
    resp = comm.get_events(req)
else:
    req = types.SimpleNamespace(update_events=step["message"])
    resp = comm.update_events(req)
print("RESULT:" + json.dumps({"status": resp.status, "content": resp.content}))
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def strict(tmp_path: Path, pki: Pki) -> Iterator[Httpd]:
    (tmp_path / "server").mkdir()
    server = Httpd(
        tmp_path / "server",
        pki,
        workers=1,
        auth_mode="strict",
        pilot_dns=f"{PILOT_DN},{OTHER_PILOT_DN}",
        production_dns=PROD_DN,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pilot_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    archives = sorted(harvester_env.CLIENTS.glob("pilot3-*.tar.gz"))
    if not archives:
        pytest.skip(f"the pilot 3.11 source tarball is not in {harvester_env.CLIENTS} (pilot3-*.tar.gz)")
    target = tmp_path_factory.mktemp("pilot311")
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(target, filter="data")
    return target / "pilot3"


def _client(server: Httpd, pki: Pki, cert: Path) -> httpx.Client:
    context = ssl.create_default_context(capath=str(pki.ca_dir))
    context.load_cert_chain(str(cert))
    return httpx.Client(
        base_url=server.https, verify=context, timeout=60, headers={"Accept": "application/json"}
    )


def _pilot(source: Path, server: Httpd, pki: Pki, cert: Path, tmp: Path, step: dict[str, Any]) -> Any:
    env = {
        **os.environ,
        "X509_USER_PROXY": str(cert),
        "X509_CERT_DIR": str(pki.ca_dir),
        "PILOT_HOME": str(tmp),
        "PANDA_SERVER_URL": server.https,
    }
    out = subprocess.run(
        [sys.executable, "-c", COMMUNICATE, str(source), json.dumps(step)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(lines[0][len("RESULT:") :])


def test_the_pilots_event_service_communicator_takes_and_reports_ranges(
    strict: Httpd, pki: Pki, pilot_source: Path, tmp_path: Path
) -> None:
    prod = _client(strict, pki, pki.add_user("Production Manager"))
    job = make_job(site="TEST_SITE", prodSourceLabel="managed", eventService=1, jobsetID=JOBSET)
    submitted = prod.post("/api/v1/job/submit", json={"jobs": json.dumps([state_list(job)])}).json()
    assert submitted["success"], submitted
    pilot_cert = pki.add_user("Pilot Factory")
    pilot = _client(strict, pki, pilot_cert)
    got = pilot.post(
        "/server/panda/getJob", data={"siteName": "TEST_SITE", "prodSourceLabel": "managed"}
    ).json()
    assert got["StatusCode"] == 0 and got["eventService"] == "True" and got["jobsetID"] == JOBSET, got
    panda_id = int(got["PandaID"])
    own = Runtime.from_settings(
        load_settings(
            None, {"db_url": f"sqlite:///{tmp_path / 'server' / 'db.sqlite'}", "data_dir": str(tmp_path)}
        )
    )
    try:
        with write_tx(own.engine) as conn:
            store.create_ranges(conn, TASK, JOBSET, [store.InputFile(8, "EVNT.1.pool.root", 0, 39)], 10)
    finally:
        own.engine.dispose()
    work = tmp_path / "wn"
    work.mkdir()

    taken = _pilot(
        pilot_source,
        strict,
        pki,
        pilot_cert,
        work,
        {"kind": "get", "jobid": panda_id, "jobsetid": JOBSET, "taskid": TASK, "num_ranges": 3},
    )
    assert taken["status"] == 0
    ranges = taken["content"]
    assert [r["eventRangeID"] for r in ranges] == [f"{TASK}-{panda_id}-8-{n}-1" for n in (1, 2, 3)]
    assert ranges[0]["LFN"] == "EVNT.1.pool.root" and ranges[0]["startEvent"] == 0

    # another pilot's credential may neither take nor report this job's ranges
    other = _client(strict, pki, pki.add_user("Other Factory"))
    refused = other.post("/server/panda/getEventRanges", data={"pandaID": panda_id, "nRanges": 1})
    assert refused.status_code == 403 and refused.json()["StatusCode"] == 70
    forged = other.post(
        "/server/panda/updateEventRanges",
        data={
            "eventRanges": json.dumps(
                [{"eventRangeID": ranges[0]["eventRangeID"], "eventStatus": "finished"}]
            )
        },
    ).json()
    assert forged["Returns"] == [False]
    user = _client(strict, pki, pki.proxy)
    assert user.post("/server/panda/getEventRanges", data={"pandaID": panda_id}).status_code == 403

    # the generic executor's reports: finished ranges zipped to an object store, a failed one alone
    finished = {
        "zipFile": {
            "numEvents": 2,
            "objstoreID": 77,
            "lfn": "EventService_premerge_8.tar",
            "fsize": 99,
            "pathConvention": 1000,
        },
        "eventRanges": [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in ranges[:2]],
    }
    done = _pilot(
        pilot_source,
        strict,
        pki,
        pilot_cert,
        work,
        {"kind": "update", "message": {"version": 1, "eventRanges": json.dumps([finished])}},
    )
    assert done["status"] == 0 and done["content"]["StatusCode"] == 0
    assert done["content"]["Returns"] == [True, True]
    failed = [{"errorCode": 1305, "eventRangeID": ranges[2]["eventRangeID"], "eventStatus": "failed"}]
    answer = _pilot(
        pilot_source,
        strict,
        pki,
        pilot_cert,
        work,
        {"kind": "update", "message": {"version": 0, "eventRanges": json.dumps(failed)}},
    )
    assert answer["content"]["Returns"] == [True]
    # the older single-range call, url-encoded as old pilots read it
    rest = pilot.post("/server/panda/getEventRanges", data={"pandaID": panda_id, "nRanges": 5}).json()[
        "eventRanges"
    ]
    assert [r["eventRangeID"] for r in rest] == [f"{TASK}-{panda_id}-8-3-2", f"{TASK}-{panda_id}-8-4-1"]
    context = ssl.create_default_context(capath=str(pki.ca_dir))
    context.load_cert_chain(str(pilot_cert))
    with httpx.Client(base_url=strict.https, verify=context, timeout=60) as plain:
        single = plain.post(
            "/server/panda/updateEventRange",
            data={"eventRangeID": rest[0]["eventRangeID"], "eventStatus": "finished"},
        )
    assert single.status_code == 200 and "StatusCode=0" in single.text
    statuses = prod.get(
        "/api/v1/event/get_event_range_statuses",
        params={"job_task_ids": json.dumps([{"task_id": TASK, "job_id": panda_id}])},
    ).json()["data"][str(panda_id)]
    assert sorted(v["status"] for v in statuses.values()) == ["finished", "finished", "finished", "sent"]
    # the user who does not own the job may not read its ranges
    assert (
        user.get(
            "/api/v1/event/get_event_range_statuses",
            params={"job_task_ids": json.dumps([{"task_id": TASK, "job_id": panda_id}])},
        ).status_code
        == 403
    )
    # the job's nEvents counts the finished ranges' events
    description = prod.get("/api/v1/job/get_description", params={"job_ids": [panda_id]}).json()
    assert description["data"][0]["nEvents"] == 30
