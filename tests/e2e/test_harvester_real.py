"""Harvester's own PanDA communicator, unchanged, against the real server over HTTPS.

The communicator (``pandaharvester/harvestercommunicator/panda_communicator.py`` of the source
tarball in ``<project root>/../shared/clients/``) runs in its own virtualenv
(:mod:`tests.e2e.harvester_env`) with a client certificate whose DN has the production role,
exactly as a Harvester instance is configured (``panda_harvester.cfg``, ``[pandacon]``). The
driver (:mod:`tests.e2e.harvester_driver`) performs one step at a time; after each the test
looks at the server's database and pages: the pull cycle (get_jobs, update_jobs to finished),
the push cycle (update_workers with pandaid_list and the propagator's log upload, worker
statistics, commands), credentials, resource types, job statistics and the event service's
refusal.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pandawms.config import load_settings
from pandawms.core.events import store
from pandawms.core.runtime import Runtime
from pandawms.db.engine import write_tx
from tests.certs import make_pki
from tests.e2e import harvester_env
from tests.e2e.httpd_proc import Httpd
from tests.jobs import make_job, state_list

HID = "hv-real"
SITE = "HV_QUEUE"
ROLE = "atlas:/atlas/Role=production"
DRIVER = Path(__file__).with_name("harvester_driver.py")


class Harvester:
    """The driver process: one step in, one result out."""

    def __init__(self, python: Path, src: Path, home: Path) -> None:
        env = {**os.environ, "PANDA_HOME": str(home), "PYTHONPATH": str(src)}
        env.pop("X509_USER_PROXY", None)
        self.proc = subprocess.Popen(
            [str(python), str(DRIVER)],
            env=env,
            cwd=home,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(home / "driver.stderr", "wb"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        self.home = home
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("READY"):
            self.proc.kill()
            pytest.fail(f"Harvester driver did not start: {first}{(home / 'driver.stderr').read_text()}")

    def step(self, name: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"step": name, "args": args}) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                pytest.fail(f"Harvester driver died in {name}:\n{(self.home / 'driver.stderr').read_text()}")
            if line.startswith("RESULT:"):
                result = json.loads(line[len("RESULT:") :])
                if isinstance(result, dict) and "driver_error" in result:
                    pytest.fail(f"{name}: {result['driver_error']}\n{result['traceback']}")
                return result

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def harvester_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    archive = harvester_env.tarball()
    if archive is None:
        pytest.skip(f"Harvester's source tarball is not in {harvester_env.CLIENTS} (harvester-*.tar.gz)")
    src = harvester_env.unpack(archive, tmp_path_factory.mktemp("harvester-src"))
    return harvester_env.harvester_python(), src


@pytest.fixture
def setup(tmp_path: Path, harvester_source: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    python, src = harvester_source
    pki = make_pki(tmp_path / "pki")
    cert = pki.add_user("Harvester Service")
    creds = tmp_path / "creds"
    for sub in ("proxies", "keys", "token_keys"):
        (creds / sub).mkdir(parents=True)
    (creds / "proxies" / "Harvester_Service.atlas__atlas_Role_production.pem").write_text("PROXY-PEM\n")
    (creds / "keys" / "os_public").write_text("PUBLIC-KEY")
    (creds / "keys" / "os_private").write_text("PRIVATE-KEY")
    (creds / "token_keys" / "hv-client").write_text("token-key-2\n")
    (tmp_path / "server").mkdir()
    server = Httpd(
        tmp_path / "server",
        pki,
        workers=1,
        auth_mode="strict",
        production_dns="/DC=org/DC=pandawms/OU=Users/CN=Harvester Service",
        creds_dir=str(creds),
        cache_dir=str(tmp_path / "cache"),
    )
    home = tmp_path / "harvester"
    harvester_env.write_config(
        home, HID, f"{server.https}/api/v1", cert, pki.ca_dir, f"{server.https}/cache/jedilog"
    )
    context = ssl.create_default_context(capath=str(pki.ca_dir))
    context.load_cert_chain(str(cert))
    client = httpx.Client(base_url=server.https, verify=context, timeout=60)
    driver = Harvester(python, src, home)
    try:
        yield {"server": server, "client": client, "driver": driver, "cert": cert, "tmp": tmp_path}
    finally:
        driver.stop()
        client.close()
        server.stop()


def _db(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "server" / "db.sqlite")


def _status(tmp: Path, ids: list[int]) -> list[str]:
    with _db(tmp) as conn:
        found = dict(conn.execute("SELECT PandaID, jobStatus FROM jobs").fetchall())
    return [found.get(i, "gone") for i in ids]


def test_the_real_communicator_pulls_pushes_and_fetches(setup: dict[str, Any]) -> None:
    tmp, client, hv = setup["tmp"], setup["client"], setup["driver"]
    jobs = [make_job(site=SITE, prodSourceLabel="managed") for _ in range(2)]
    reply = client.post("/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}).json()
    assert reply["success"], reply
    ids = [a[0] for a in reply["data"]]

    hello = hv.step("hello")
    assert hello["check_panda"] is True and hello["is_alive"] == [True, ""]
    with _db(tmp) as conn:
        assert conn.execute(
            "SELECT sw_version FROM harvester_instances WHERE harvesterID=?", (HID,)
        ).fetchone() == ("0.7.5",)

    # pull: the job fetcher takes both jobs
    got = hv.step("get_jobs", site=SITE, n=5)
    assert sorted(got["ids"]) == sorted(ids) and got["message"] == "OK"
    assert _status(tmp, ids) == ["sent", "sent"]

    # push: workers that run them, with the propagator uploading worker 41's stdout
    pushed = hv.step(
        "update_workers",
        site=SITE,
        workers=[
            {"workerID": 41, "status": "running", "pandaids": [ids[0]], "log": "pilot started\n"},
            {"workerID": 42, "status": "running", "pandaids": [ids[1]]},
        ],
    )
    assert pushed["results"] == [True, True] and pushed["message"] == "OK"
    remote = f"{HID}__worker41.out"
    assert pushed["stdOut"][0] == f"{setup['server'].https}/cache/jedilog/{remote}"
    assert [u["ok"] for u in pushed["uploads"]] == [True]
    with _db(tmp) as conn:
        workers = conn.execute(
            "SELECT workerID, status FROM harvester_workers WHERE harvesterID=? ORDER BY workerID", (HID,)
        ).fetchall()
        rel = conn.execute(
            "SELECT workerID, PandaID FROM harvester_rel_jobs_workers WHERE harvesterID=? ORDER BY workerID",
            (HID,),
        ).fetchall()
        logs = conn.execute("SELECT fileName, harvesterID, workerID, fileSize FROM jedi_logs").fetchall()
    assert workers == [(41, "running"), (42, "running")]
    assert rel == [(41, ids[0]), (42, ids[1])]
    assert logs == [(remote, HID, 41, len("pilot started\n"))]
    # the propagator's next pass sends only the new bytes; the server appends them
    more = hv.step("append_worker_log", workerID=41, text="payload done\n")
    assert [(u["offset"], u["ok"]) for u in more] == [(len("pilot started\n"), True)]
    served = client.get(f"/cache/jedilog/{remote}")
    assert served.status_code == 200 and served.text == "pilot started\npayload done\n"
    page = client.get(f"/monitor/job/{ids[0]}")
    assert page.status_code == 200 and f'href="/cache/jedilog/{remote}"' in page.text

    # pull: heartbeats through pilot/update_jobs_bulk
    assert (
        hv.step("update_jobs", site=SITE, status="running", ids=ids)
        == [{"StatusCode": 0, "command": "NULL"}] * 2
    )
    assert _status(tmp, ids) == ["running", "running"]
    assert [c["status"] for c in hv.step("check_jobs", site=SITE, ids=ids)] == ["running", "running"]

    # job statistics Harvester's cacher reads
    stats = hv.step("job_stats")
    assert stats["stats"][1] == "OK" and stats["stats"][0][SITE]["running"] == 2
    assert stats["stats_new"][1] == "OK"
    detailed = stats["stats_new"][0][SITE]
    assert sum(by_label["managed"]["running"] for by_label in detailed.values()) == 2

    # push: worker statistics, service metrics and dialogs
    counts = {"managed": {"SCORE": {"running": 2, "submitted": 1}}}
    ws = hv.step("worker_stats", site=SITE, stats=counts)
    assert ws["update"] == [True, "OK"] and ws["read"] == {SITE: {HID: counts}}
    assert hv.step("reports") == {"service_metrics": [True, ""], "dialogs": [True, ""]}

    # an operator kills the first job: its worker gets a kill command, acquired once and acknowledged
    assert client.post("/api/v1/job/kill", json={"job_ids": [ids[0]]}).json()["data"] == [True]
    commands = hv.step("commands", n=10)
    assert [(c["command"], c["params"]) for c in commands["commands"]] == [("SYNC_WORKERS_KILL", [41])]
    assert commands["again"] == [] and commands["ack"] is True
    with _db(tmp) as conn:
        assert conn.execute("SELECT COUNT(*) FROM harvester_commands").fetchone() == (0,)

    # pull: the second job ends; its worker is reported finished
    assert hv.step("update_jobs", site=SITE, status="finished", ids=[ids[1]]) == [
        {"StatusCode": 0, "command": "NULL"}
    ]
    final = client.get("/api/v1/job/get_status", params={"job_ids": ids}).json()["data"]
    assert [s["status"] for s in final] == ["running", "finished"] and final[0]["command"] == "tobekilled"
    assert hv.step(
        "update_workers", site=SITE, workers=[{"workerID": 42, "status": "finished", "pandaids": [ids[1]]}]
    )["results"] == [True]
    with _db(tmp) as conn:
        assert conn.execute(
            "SELECT status FROM harvester_workers WHERE harvesterID=? AND workerID=42", (HID,)
        ).fetchone() == ("finished",)

    # credential managers and the cacher
    got_creds = hv.step(
        "creds",
        role=ROLE,
        cert=str(setup["cert"]),
        public="os_public",
        private="os_private",
        client="hv-client",
    )
    assert got_creds["proxy"] == ["PROXY-PEM\n", ""]
    assert got_creds["key_pair"] == [{"public_key": "PUBLIC-KEY", "private_key": "PRIVATE-KEY"}, None]
    assert got_creds["token_key"] == ["token-key-2", ""]
    types, message = hv.step("resource_types")
    assert message == "" and {t["resource_name"] for t in types} >= {
        "SCORE",
        "MCORE",
        "SCORE_HIMEM",
        "MCORE_HIMEM",
    }
    assert {"mincore", "maxcore", "minrampercore", "maxrampercore"} <= set(types[0])

    # a job that is not an event-service consumer has no ranges
    events = hv.step("events", site=SITE, panda_id=ids[1])
    assert events["availability"] == [True, 0]
    assert events["ranges"] == [True, {str(ids[1]): []}]


def test_the_real_communicator_keeps_and_clears_hpo_checkpoints(setup: dict[str, Any]) -> None:
    """Harvester's propagator uploads a point's checkpoint; its event updater clears it.

    The communicator joins its base URL (the job's ``sourceURL``) and ``file_server/...``; a
    pandawms server's v1 base is ``<server>/api/v1``.
    """
    tmp, client, hv, server = setup["tmp"], setup["client"], setup["driver"], setup["server"]
    base = f"{server.https}/api/v1"
    assert hv.step("upload_checkpoint", base_url=base, task_id=4242, sub_id="17", text="weights-17") is True
    assert (tmp / "cache" / "hpo_cp_4242_17").read_text() == "weights-17"
    # what the communicator's download_checkpoint fetches
    assert client.get("/cache/hpo_cp_4242_17").text == "weights-17"
    assert hv.step("clear_checkpoint", base_url=base, task_id=4242, sub_id="17") == [True, ""]
    assert not (tmp / "cache" / "hpo_cp_4242_17").exists()
    cleared_again = hv.step("clear_checkpoint", base_url=base, task_id=4242, sub_id="17")
    assert cleared_again[0] is False and "no checkpoint hpo_cp_4242_17" in cleared_again[1]


def test_the_real_communicator_drives_event_ranges(setup: dict[str, Any]) -> None:
    """Event-service jobs through Harvester: availability, ranges in chunks, reports with a zip
    file through the propagator, a failed range back to the pool and taken again."""
    tmp, client, hv = setup["tmp"], setup["client"], setup["driver"]
    jobset, task = 777, 31
    jobs = [make_job(site=SITE, prodSourceLabel="managed", eventService=1, jobsetID=jobset) for _ in range(2)]
    reply = client.post("/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}).json()
    assert reply["success"], reply
    ids = [a[0] for a in reply["data"]]
    assert sorted(hv.step("get_jobs", site=SITE, n=5)["ids"]) == sorted(ids)
    own = Runtime.from_settings(
        load_settings(None, {"db_url": f"sqlite:///{tmp / 'server' / 'db.sqlite'}", "data_dir": str(tmp)})
    )
    try:
        with write_tx(own.engine) as conn:
            made = store.create_ranges(
                conn,
                task,
                jobset,
                [store.InputFile(5, "EVNT.pool.root.1", 0, 59, guid="G-1", scope="mc")],
                10,
            )
        assert made == 6
    finally:
        own.engine.dispose()

    first = hv.step("events", site=SITE, panda_id=ids[0], n_ranges=4, task_id=task, jobset_id=jobset)
    assert first["availability"] == [True, 6]
    ok, got = first["ranges"]
    assert ok is True and list(got) == [str(ids[0])]
    ranges = got[str(ids[0])]
    assert [(r["startEvent"], r["lastEvent"]) for r in ranges] == [(0, 9), (10, 19), (20, 29), (30, 39)]
    assert ranges[0] == {
        "eventRangeID": f"{task}-{ids[0]}-5-1-1",
        "startEvent": 0,
        "lastEvent": 9,
        "LFN": "EVNT.pool.root.1",
        "GUID": "G-1",
        "scope": "mc",
    }
    second = hv.step("events", site=SITE, panda_id=ids[1], n_ranges=4, task_id=task, jobset_id=jobset)
    assert second["availability"] == [True, 2]
    assert [r["startEvent"] for r in second["ranges"][1][str(ids[1])]] == [40, 50]

    # the propagator reports three finished in a zip file, one failed
    statuses = {r["eventRangeID"]: "finished" for r in ranges[:3]} | {ranges[3]["eventRangeID"]: "failed"}
    reported = hv.step(
        "report_events", site=SITE, panda_id=ids[0], statuses=statuses, zip_lfn="premerge.1.tar"
    )
    assert reported["jobs"][0]["StatusCode"] == 0
    assert set(reported["subStatus"].values()) == {"done"}
    with _db(tmp) as conn:
        rows = conn.execute(
            "SELECT job_processID, status, zipLFN, objstoreID, pathConvention FROM event_ranges"
            " WHERE jobsetID=? ORDER BY job_processID",
            (jobset,),
        ).fetchall()
        n_events = conn.execute("SELECT nEvents FROM jobs WHERE PandaID=?", (ids[0],)).fetchone()
    assert rows[:4] == [
        (1, "finished", "premerge.1.tar", "1234/1000", None),
        (2, "finished", "premerge.1.tar", "1234/1000", None),
        (3, "finished", "premerge.1.tar", "1234/1000", None),
        (4, "failed", "premerge.1.tar", "1234/1000", None),
    ]
    assert n_events == (30,)
    # the failed range is back in the pool: the other consumer takes it in its second attempt
    again = hv.step("events", site=SITE, panda_id=ids[1], n_ranges=4, task_id=task, jobset_id=jobset)
    assert again["availability"] == [True, 1]
    assert [r["eventRangeID"] for r in again["ranges"][1][str(ids[1])]] == [f"{task}-{ids[1]}-5-4-2"]
    # a report on the range under its first attempt is refused; Harvester still ends it locally
    stale = hv.step(
        "report_events", site=SITE, panda_id=ids[0], statuses={ranges[3]["eventRangeID"]: "finished"}
    )
    assert stale["subStatus"] == {ranges[3]["eventRangeID"]: "done"}
    with _db(tmp) as conn:
        assert conn.execute("SELECT status, PandaID FROM event_ranges WHERE job_processID=4").fetchone() == (
            "sent",
            ids[1],
        )
    owner = client.get(
        "/api/v1/event/get_event_range_statuses",
        params={"job_task_ids": json.dumps([{"task_id": task, "job_id": ids[0]}])},
    ).json()
    assert owner["success"] is True
    assert sorted(v["status"] for v in owner["data"][str(ids[0])].values()) == ["finished"] * 3
