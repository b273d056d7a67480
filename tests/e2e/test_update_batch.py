"""State changes and final reports through the worker's group commit, against a real server.

Every legacy ``updateJob`` that is not a plain heartbeat (``starting``, ``running`` of a job
still "sent" or "starting", ``finished``/``failed`` with their file report, job report and pilot
log) joins one worker's batch of full updates (:func:`pandawms.core.jobs.heartbeat.update_job_grouped`):
many pilots' updates in one transaction, in PandaID order. Each pilot must still get the answer
of its own job, each transition must be written exactly once, and a database refusal of one
item must fail that item alone, leaving its job as it was, while its batch is rerun one by one.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import ServerProcess
from tests.dbs import BACKENDS
from tests.e2e.test_heartbeat_batch import JSON, _answers, _backend, _db, _send_all
from tests.jobs import make_file, make_job, state_list

N_JOBS = 44
OK = (200, 0, "NULL")
#: What the full path logs when the database refused a batch of several updates.
RETRY_LINE = re.compile(r"update batch of (\d+) refused \(\w+\); retrying one by one")
#: Every transition a job makes on its way from dispatch to a pilot's "finished" report.
LIFECYCLE = [
    ("activated", "sent"),
    ("sent", "starting"),
    ("starting", "running"),
    ("running", "holding"),
    ("holding", "finished"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> ServerProcess:
    """The real server (one worker, so concurrent updates meet in its group commit)."""
    url = (
        f"sqlite:///{tmp_path / 'updates.sqlite'}"
        if request.param == "sqlite"
        else BACKENDS[request.param].require()  # skips when no PostgreSQL server answers
    )
    return start_server(url)


def _submit(base: str, n: int, label: str, **attrs: Any) -> list[int]:
    """``n`` jobs with one output and one log file each."""
    jobs = [
        state_list(
            make_job(
                jobName=f"{label}-{i}",
                files=[make_file(f"{label}-{i}.root"), make_file(f"{label}-{i}.log.tgz", "log")],
                **attrs,
            )
        )
        for i in range(n)
    ]
    reply = httpx.post(base + "/api/v1/job/submit", json={"jobs": json.dumps(jobs)}, timeout=60).json()
    assert reply["success"], reply
    return [int(answer[0]) for answer in reply["data"]]


def _dispatch(base: str, n: int) -> list[dict[str, Any]]:
    """``n`` activated jobs as the pilot receives them, from one bulk getJob."""
    reply = httpx.post(
        base + "/server/panda/getJob",
        headers=JSON,
        data={"siteName": "TEST_SITE", "prodSourceLabel": "user", "node": "wn0", "nJobs": str(n)},
        timeout=60,
    ).json()
    assert reply["StatusCode"] == 0, reply
    jobs: list[dict[str, Any]] = reply["jobs"]
    assert len(jobs) == n, [job["PandaID"] for job in jobs]
    return jobs


def _pid(job: dict[str, Any]) -> int:
    return int(job["PandaID"])


def _update(job: dict[str, Any], state: str, i: int, **extra: str) -> dict[str, str]:
    return {
        "jobId": str(job["PandaID"]),
        "state": state,
        "attemptNr": str(job["attemptNr"]),
        "siteName": "TEST_SITE",
        "node": f"wn-{i}",
        "cpuConsumptionTime": str(10 + i),
        **extra,
    }


def _lfns(job: dict[str, Any]) -> list[str]:
    """The output and log files the pilot has to report."""
    names = [lfn for lfn in str(job.get("outFiles") or "").split(",") if lfn]
    return list(dict.fromkeys([*names, str(job["logFile"])]))


def _final(job: dict[str, Any], state: str, i: int, guid: str | None = None, **extra: str) -> dict[str, str]:
    """A final report as a pilot sends it: the file report, the job report and the log tail."""
    pid = _pid(job)
    report = {
        lfn: {"guid": guid or f"guid-{pid}-{k}", "fsize": 1000 + k, "adler32": "0988eb14"}
        for k, lfn in enumerate(_lfns(job))
    }
    fields = {
        "xml": json.dumps(report),
        "metaData": json.dumps({"exeErrorCode": 0, "pandaid": pid}),
        "pilotLog": f"pilot log of {pid}",
        "transExitCode": "0" if state == "finished" else "1",
        "pilotErrorCode": "0" if state == "finished" else "1305",
        **extra,
    }
    return _update(job, state, i, **fields)


def _jobs(server: ServerProcess, ids: list[int]) -> dict[int, dict[str, Any]]:
    with _db(server) as conn:
        rows = conn.execute(
            text(
                'SELECT "PandaID", "jobStatus", "attemptNr", "startTime", "endTime", "stateChangeTime",'
                ' "modificationTime", "modificationHost", "cpuConsumptionTime", "transExitCode",'
                ' "pilotErrorCode", "taskBufferErrorCode", "parentID", "commandToPilot" FROM jobs'
            )
        ).mappings()
        found = {int(row["PandaID"]): dict(row) for row in rows}
    return {pid: found[pid] for pid in ids}


def _files(server: ServerProcess, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with _db(server) as conn:
        rows = conn.execute(
            text(
                'SELECT "PandaID", "lfn", "type", "status", "fsize", "checksum", "GUID" FROM files'
                ' ORDER BY "rowID"'
            )
        ).mappings()
        for row in rows:
            if int(row["PandaID"]) in ids:
                out[int(row["PandaID"])].append(dict(row))
    return {pid: out[pid] for pid in ids}


def _history(server: ServerProcess, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each job's status-log rows from dispatch on, in the order they were written."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with _db(server) as conn:
        rows = conn.execute(
            text(
                'SELECT "PandaID", "oldStatus", "jobStatus", "modificationTime" FROM job_status_log'
                " ORDER BY id"
            )
        ).mappings()
        for row in rows:
            if int(row["PandaID"]) in ids and row["oldStatus"] is not None:
                out[int(row["PandaID"])].append(dict(row))
    return {pid: out[pid] for pid in ids}


def _transitions(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(row["oldStatus"], row["jobStatus"]) for row in history]


def _side_data(server: ServerProcess, table: str, ids: list[int]) -> set[int]:
    """PandaIDs of ``ids`` with a row in ``table`` (job_output_reports, job_metadata, pilot_logs)."""
    with _db(server) as conn:
        found = {int(pid) for (pid,) in conn.execute(text(f'SELECT "PandaID" FROM {table}'))}  # noqa: S608
    return found & set(ids)


def _shared_stamps(histories: dict[int, list[dict[str, Any]]], transition: tuple[str, str]) -> int:
    """How many jobs made ``transition`` at the same instant as another job.

    A batch takes one clock reading for all its items, and the status log and the job carry it
    (microseconds), so jobs sharing a stamp were moved by one batch.
    """
    stamps = Counter(
        row["modificationTime"]
        for rows in histories.values()
        for row in rows
        if (row["oldStatus"], row["jobStatus"]) == transition
    )
    return sum(count for count in stamps.values() if count > 1)


def _send_checked(
    server: ServerProcess, updates: list[dict[str, str]], want: list[tuple[int, int, str]]
) -> None:
    replies = _send_all(server.base, updates)
    assert _answers(replies) == want, [r.text for r in replies]


def _running(server: ServerProcess, n: int, label: str, **attrs: Any) -> list[dict[str, Any]]:
    """``n`` jobs taken to running through concurrent "starting" then "running" updates."""
    jobs = _dispatch(server.base, len(_submit(server.base, n, label, **attrs)))
    _send_checked(server, [_update(job, "starting", i) for i, job in enumerate(jobs)], [OK] * n)
    _send_checked(server, [_update(job, "running", i) for i, job in enumerate(jobs)], [OK] * n)
    rows = _jobs(server, [_pid(job) for job in jobs])
    assert {row["jobStatus"] for row in rows.values()} == {"running"}
    return jobs


def test_a_crowd_of_pilots_runs_jobs_to_the_end(server: ServerProcess) -> None:
    """Starting, running and finished for 40+ jobs at once: every transition written once."""
    jobs = _dispatch(server.base, len(_submit(server.base, N_JOBS, "life")))
    ids = [_pid(job) for job in jobs]
    assert {int(job["attemptNr"]) for job in jobs} == {0}

    _send_checked(server, [_update(job, "starting", i) for i, job in enumerate(jobs)], [OK] * N_JOBS)
    rows = _jobs(server, ids)
    assert {row["jobStatus"] for row in rows.values()} == {"starting"}
    started = {pid: row["startTime"] for pid, row in rows.items()}  # set at dispatch

    _send_checked(server, [_update(job, "running", 100 + i) for i, job in enumerate(jobs)], [OK] * N_JOBS)
    rows = _jobs(server, ids)
    for i, pid in enumerate(ids):
        assert rows[pid]["jobStatus"] == "running", rows[pid]
        assert rows[pid]["startTime"] > started[pid], (rows[pid], started[pid])  # the payload started
        assert rows[pid]["cpuConsumptionTime"] == 110 + i and rows[pid]["modificationHost"] == f"wn-{100 + i}"

    finals = [_final(job, "finished", 200 + i) for i, job in enumerate(jobs)]
    _send_checked(server, finals, [OK] * N_JOBS)

    rows = _jobs(server, ids)
    files = _files(server, ids)
    histories = _history(server, ids)
    for i, (job, pid) in enumerate(zip(jobs, ids, strict=True)):
        row = rows[pid]
        assert row["jobStatus"] == "finished", row
        assert row["startTime"] is not None and row["endTime"] is not None, row
        assert row["startTime"] <= row["endTime"], row
        assert row["cpuConsumptionTime"] == 210 + i and str(row["transExitCode"]) == "0", row
        kinds = {f["type"]: f for f in files[pid]}
        assert set(kinds) == {"output", "log"}, files[pid]
        assert kinds["log"]["lfn"] == job["logFile"]
        for k, lfn in enumerate(_lfns(job)):
            (f,) = [f for f in files[pid] if f["lfn"] == lfn]
            assert (f["status"], f["fsize"], f["checksum"], f["GUID"]) == (
                "ready",
                1000 + k,
                "ad:0988eb14",
                f"guid-{pid}-{k}",
            ), f
        assert _transitions(histories[pid]) == LIFECYCLE, (pid, histories[pid])
    for table in ("job_output_reports", "job_metadata", "pilot_logs"):
        assert _side_data(server, table, ids) == set(ids), table
    # The crowd did share transactions: some jobs moved at the same instant as others.
    assert sum(_shared_stamps(histories, move) for move in LIFECYCLE[1:]) > 0, "no update was batched"


POISON = "refused-by-the-database"

_INSTALL = {
    # A real refusal of what one final report holds, as a column too short for it would give.
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION test_refuse_report() RETURNS trigger AS $$
        BEGIN
            IF NEW."data" LIKE '%{POISON}%' THEN
                RAISE EXCEPTION 'value too long for type character varying(8)'
                    USING ERRCODE = 'string_data_right_truncation';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER test_refuse_report BEFORE INSERT ON job_output_reports"
        " FOR EACH ROW EXECUTE FUNCTION test_refuse_report()",
    ],
    "sqlite": [
        "CREATE TRIGGER test_refuse_report BEFORE INSERT ON job_output_reports"
        f" WHEN NEW.\"data\" LIKE '%{POISON}%' BEGIN SELECT RAISE(ABORT, 'report refused'); END"
    ],
}
_REMOVE = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS test_refuse_report ON job_output_reports",
        "DROP FUNCTION IF EXISTS test_refuse_report()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS test_refuse_report"],
}
#: The refusal's HTTP status: PostgreSQL's is a DataError (400), SQLite's trigger a constraint (409).
_REFUSED_STATUS = {"postgresql": 400, "sqlite": 409}


def test_a_final_report_the_database_refuses_fails_alone(server: ServerProcess) -> None:
    """One refused final report in a concurrent crowd: only its pilot gets the error.

    The database refuses the report row of one job, written after its move to holding and its
    status-log row in the same transaction: the batch rolls back and is rerun one item at a
    time, the refused job keeps nothing of its report, and every other job ends once (a failed
    job with attempts left is retried once, not once per run of the batch). Rounds repeat with
    fresh jobs until the server's log shows a batch of several refused and rerun.
    """
    backend = _backend(server)
    with _db(server) as conn:
        for statement in _INSTALL[backend]:
            conn.execute(text(statement))
    log_start = len(server.log())
    rounds = 0
    try:
        while not RETRY_LINE.search(server.log()[log_start:]):
            rounds += 1
            assert rounds <= 4, "the refused report never shared a batch with others"
            jobs = _running(server, N_JOBS, f"r{rounds}")
            ids = [_pid(job) for job in jobs]
            bad = ids[N_JOBS // 2]
            failing = set(ids[3::10]) - {bad}
            before_jobs = _jobs(server, ids)
            before_files = _files(server, ids)
            before_history = _history(server, ids)

            updates = [
                _final(
                    job,
                    "failed" if _pid(job) in failing else "finished",
                    i,
                    guid=POISON if _pid(job) == bad else None,
                    **({"pilotErrorCode": "1099"} if _pid(job) in failing else {}),  # recoverable
                )
                for i, job in enumerate(jobs)
            ]
            replies = _send_all(server.base, updates)

            after = _jobs(server, ids)
            files = _files(server, ids)
            histories = _history(server, ids)
            for pid, reply in zip(ids, replies, strict=True):
                body = reply.json()
                if pid == bad:
                    assert reply.status_code == _REFUSED_STATUS[backend], reply.text
                    assert body["StatusCode"] != 0, body
                    assert "the database refused" in body["errorDialog"], body
                    assert after[pid]["jobStatus"] == "running", after[pid]
                    assert after[pid] == before_jobs[pid], "the refused report changed its job"
                    assert files[pid] == before_files[pid], "the refused report changed its files"
                    assert histories[pid] == before_history[pid], "the refused report left a status-log row"
                    continue
                assert (reply.status_code, body) == (200, {"StatusCode": 0, "command": "NULL"}), reply.text
                end = "failed" if pid in failing else "finished"
                assert after[pid]["jobStatus"] == end and after[pid]["endTime"] is not None, after[pid]
                assert _transitions(histories[pid]) == [*LIFECYCLE[:-1], ("holding", end)], histories[pid]
                log_file = next(f for f in files[pid] if f["type"] == "log")
                assert log_file["status"] == "ready", log_file
            for table in ("job_output_reports", "job_metadata", "pilot_logs"):
                assert _side_data(server, table, ids) == set(ids) - {bad}, table
            children = _children(server, ids)
            assert sorted(children) == sorted(failing), children  # one new attempt per failed job
    finally:
        with _db(server) as conn:
            for statement in _REMOVE[backend]:
                conn.execute(text(statement))
    sizes = [int(n) for n in RETRY_LINE.findall(server.log()[log_start:])]
    assert sizes and min(sizes) >= 2, sizes
    # Once the database takes the report again, the job that kept running ends as any other.
    (job,) = [job for job in jobs if _pid(job) == bad]
    _send_checked(server, [_final(job, "finished", 0, guid=POISON)], [OK])
    assert _jobs(server, [bad])[bad]["jobStatus"] == "finished"
    assert _transitions(_history(server, [bad])[bad]) == LIFECYCLE


def _children(server: ServerProcess, ids: list[int]) -> list[int]:
    """The parentID of every job retried from one of ``ids`` (one entry per new attempt)."""
    with _db(server) as conn:
        rows = conn.execute(text('SELECT "parentID", "attemptNr", "jobStatus" FROM jobs')).mappings()
        out = []
        for row in rows:
            if row["parentID"] is not None and int(row["parentID"]) in ids:
                assert row["attemptNr"] >= 1 and row["jobStatus"] in ("activated", "sent"), row
                out.append(int(row["parentID"]))
    return out


def test_each_update_of_a_mixed_crowd_gets_its_own_answer(server: ServerProcess) -> None:
    """Repeated, unknown, stale, failed and normal reports and state changes in one go.

    Each pilot gets the answer of its own job: ``alreadydone`` for a job that already ended,
    ``tobekilled`` for an unknown PandaID or another attempt, 0 and ``NULL`` for the rest; only
    the updates that may change a job change it, each once.
    """
    done = _running(server, 10, "done")
    _send_checked(server, [_final(job, "finished", i) for i, job in enumerate(done)], [OK] * 10)
    running = _running(server, 40, "mixed")
    retried, last, stale = running[:8], running[8:16], running[16:24]
    normal, holding, transferring = running[24:32], running[32:36], running[36:40]
    sent = _dispatch(server.base, len(_submit(server.base, 4, "sent")))
    everyone = done + running + sent
    ids = [_pid(job) for job in everyone]
    unknown = max(ids) + 1000

    updates: list[tuple[dict[str, str], tuple[int, int, str]]] = []
    for i, job in enumerate(done):  # a pilot sending its final report again
        updates.append((_final(job, "finished", 300 + i), (200, 0, "alreadydone")))
    for i, job in enumerate(retried):  # stage-in failed, attempts left: retried as a new PandaID
        updates.append((_final(job, "failed", 400 + i, pilotErrorCode="1099"), OK))
    for i, job in enumerate(last):  # 1144, the job was killed: no new attempt would help
        updates.append((_final(job, "failed", 450 + i, pilotErrorCode="1144"), OK))
    for i, job in enumerate(stale):  # the pilot of another attempt
        stale_job = {**job, "attemptNr": int(job["attemptNr"]) + 2}
        updates.append((_final(stale_job, "finished", 500 + i), (200, 0, "tobekilled")))
    for i, job in enumerate(normal):
        updates.append((_final(job, "finished", 600 + i), OK))
    for i, job in enumerate(holding):
        updates.append((_update(job, "holding", 650 + i), OK))
    for i, job in enumerate(transferring):
        updates.append((_update(job, "transferring", 660 + i), OK))
    for i, job in enumerate(sent):  # "running" straight from "sent", no "starting" before
        updates.append((_update(job, "running", 670 + i), OK))
    for i in range(4):
        ghost = {"PandaID": unknown + i, "attemptNr": 0, "logFile": "ghost.log.tgz"}
        updates.append((_final(ghost, "finished", 700 + i), (200, 0, "tobekilled")))
    # Interleaved, so every kind meets the others in the batches.
    updates = updates[::2] + updates[1::2]
    assert len(updates) >= 50

    before = _jobs(server, ids)
    before_files = _files(server, ids)
    before_history = _history(server, ids)
    replies = _send_all(server.base, [update for update, _ in updates])
    assert _answers(replies) == [want for _, want in updates], [r.text for r in replies]

    after = _jobs(server, ids)
    files = _files(server, ids)
    histories = _history(server, ids)
    for job in done + stale:
        pid = _pid(job)
        assert after[pid] == before[pid], "a repeated or stale report changed the job"
        assert files[pid] == before_files[pid], "a repeated or stale report changed the files"
        assert histories[pid] == before_history[pid], "a repeated or stale report logged a move"
    for job in retried + last:
        pid = _pid(job)
        code = 1099 if job in retried else 1144
        assert after[pid]["jobStatus"] == "failed" and after[pid]["pilotErrorCode"] == code, after[pid]
        assert after[pid]["endTime"] is not None, after[pid]
        assert _transitions(histories[pid]) == [*LIFECYCLE[:-1], ("holding", "failed")], histories[pid]
        statuses = {f["type"]: f["status"] for f in files[pid]}
        assert statuses == {"output": "failed", "log": "ready"}, files[pid]
    for job in normal:
        pid = _pid(job)
        assert after[pid]["jobStatus"] == "finished", after[pid]
        assert _transitions(histories[pid]) == LIFECYCLE, histories[pid]
        assert {f["status"] for f in files[pid]} == {"ready"}, files[pid]
    for job, state in [(job, "holding") for job in holding] + [(job, "transferring") for job in transferring]:
        pid = _pid(job)
        assert after[pid]["jobStatus"] == state, after[pid]
        assert _transitions(histories[pid]) == [*LIFECYCLE[:3], ("running", state)], histories[pid]
        assert files[pid] == before_files[pid], "a state change without a report changed the files"
    for job in sent:
        pid = _pid(job)
        assert after[pid]["jobStatus"] == "running", after[pid]
        assert after[pid]["startTime"] > before[pid]["startTime"], (after[pid], before[pid])
        assert _transitions(histories[pid]) == [("activated", "sent"), ("sent", "running")], histories[pid]
    assert sorted(_children(server, ids)) == sorted(_pid(job) for job in retried)
    assert not _jobs_exist(server, [unknown + i for i in range(4)])
    ended = {_pid(job) for job in retried + last + normal}
    for table in ("job_output_reports", "job_metadata", "pilot_logs"):
        assert _side_data(server, table, ids) == ended | {_pid(job) for job in done}, table

    # The pilots that said "holding" or "transferring" end their jobs with the final report.
    late = holding + transferring
    _send_checked(server, [_final(job, "finished", 800 + i) for i, job in enumerate(late)], [OK] * len(late))
    after = _jobs(server, [_pid(job) for job in late])
    histories = _history(server, [_pid(job) for job in late])
    for job in late:
        pid = _pid(job)
        assert after[pid]["jobStatus"] == "finished" and after[pid]["endTime"] is not None, after[pid]
        moves = (
            [("running", "holding")]
            if job in holding
            else [("running", "transferring"), ("transferring", "holding")]
        )
        assert _transitions(histories[pid]) == [*LIFECYCLE[:3], *moves, ("holding", "finished")], histories[
            pid
        ]


def _jobs_exist(server: ServerProcess, ids: list[int]) -> set[int]:
    with _db(server) as conn:
        found = {int(pid) for (pid,) in conn.execute(text('SELECT "PandaID" FROM jobs'))}
    return found & set(ids)
