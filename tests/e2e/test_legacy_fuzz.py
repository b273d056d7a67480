"""Fuzzing ``/server/panda/<method>`` on a running server with hypothesis-made bodies.

Pilots in the field send form bodies (3.7), gzip-compressed JSON without a Content-Encoding
(3.11), and, when something is broken between them and the server, anything at all. For every
legacy method, and for unknown ones, this sends plausible and implausible parameters in each
of those encodings plus raw garbage, and checks what must hold whatever arrives:

* never a 500, and always an answer within the client timeout (no hang);
* a refusal is a 4xx carrying PanDA's ``StatusCode`` and ``errorDialog``;
* a refused request leaves the database exactly as it was;
* the server still answers normally afterwards.

Bounded: a few hundred requests against one server on SQLite, well under a minute.
"""

from __future__ import annotations

import gzip
import json
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from pandawms.api.legacy import METHODS
from pandawms.api.pilot_codec import UPDATE_FIELDS
from pandawms.db.schema import metadata
from tests.conftest import ServerProcess
from tests.jobs import make_file, make_job, state_list

pytestmark = pytest.mark.e2e

SITE = "FUZZ_SITE"
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: A hang is a failure: every answer must come well within this.
TIMEOUT = httpx.Timeout(30.0)

PARAM_NAMES = sorted(
    {
        "siteName",
        "nJobs",
        "prodSourceLabel",
        "computingElement",
        "node",
        "mem",
        "diskSpace",
        "remaining_time",
        "resourceType",
        "taskID",
        "prodUserID",
        "schedulerID",
        "background",
        "jobType",
        "jobId",
        "state",
        "attemptNr",
        "xml",
        "metaData",
        "pilotLog",
        "jobList",
        "ids",
        "pandaID",
        "eventRanges",
        "status",
        "workerID",
        "harvesterID",
        *UPDATE_FIELDS,
    }
)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


#: Tables that change on their own: the audit trail and the daemon's leases and run records.
_BOOKKEEPING = frozenset({"audit_log", "daemon_leases", "daemon_runs", "mq_cursor"})


class Target:
    """The server under fuzz, a few real jobs to aim at, and a view of its database."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.base, timeout=TIMEOUT)
        self.engine: Engine = create_engine(server.db_url)
        jobs = [
            make_job(site=SITE, files=[make_file("out.root"), make_file("job.log.tgz", "log")])
            for _ in range(6)
        ]
        reply = self.client.post(
            "/api/v1/job/submit", json={"jobs": json.dumps([state_list(j) for j in jobs])}
        )
        self.ids = [answer[0] for answer in reply.json()["data"]]
        for _ in range(3):  # some sent, some still activated
            self.client.post("/server/panda/getJob", data={"siteName": SITE, "prodSourceLabel": "user"})

    def snapshot(self) -> dict[str, list[tuple[str, ...]]]:
        """Every row but the audit trail's (it records refusals by design) and the daemon's."""
        with self.engine.connect() as conn:
            return {
                table.name: sorted(tuple(map(repr, row)) for row in conn.execute(select(table)))
                for table in metadata.sorted_tables
                if table.name not in _BOOKKEEPING
            }


@pytest.fixture
def target(db_url: str, start_server: Callable[..., ServerProcess]) -> Iterator[Target]:
    """The server on each backend in turn: what a backend refuses (a NUL in text, an odd date)
    must come back as a refusal, not as a database error."""
    # Only the publisher task, which writes nothing without a broker: no job moves on its own.
    server = start_server(db_url, env={"PANDA_DAEMON_TASKS": "publisher"})
    built = Target(server)
    yield built
    # Whatever arrived, the server still works.
    assert built.client.get("/server/panda/isAlive").text == "alive=yes"
    built.client.close()
    built.engine.dispose()
    assert "Traceback" not in server.log(), server.log()[-5000:]


def values(ids: list[int]) -> st.SearchStrategy[Any]:
    """Parameter values: real ones, PanDA's "NULL", edge numbers, JSON-ish text and noise."""
    real = st.sampled_from([str(i) for i in ids] + [SITE, "user", "managed", "running", "finished", "failed"])
    numbers = st.sampled_from(["0", "-1", "1.5", "1e3", "NaN", "inf", "-inf", str(2**63), "9" * 40, "0x10"])
    jsonish = st.sampled_from(
        [
            "[",
            "{}",
            "[]",
            "null",
            json.dumps([{"jobId": ids[0], "state": "running"}]),
            json.dumps([{"jobId": "x"}, 5, None]),
            json.dumps({"out.root": {"fsize": "big", "adler32": None}}),
            "<POOLFILECATALOG><File><logical/></File>",
            "[" * 2000,
        ]
    )
    # What one backend stores and another refuses: NUL characters, dates at the ends of the range.
    edges = st.sampled_from(
        [
            "a\x00b",
            "\x00",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "99999999999",
            "1e10",
            "\u00e9\U0001f600",
        ]
    )
    return st.one_of(
        real, numbers, jsonish, edges, st.just("NULL"), st.just(""), _TEXT, st.text(max_size=3000)
    )


def params(ids: list[int]) -> st.SearchStrategy[dict[str, Any]]:
    """A parameter dict: mostly the names the methods read, some unknown ones."""
    names = st.sampled_from(PARAM_NAMES) | st.text(min_size=1, max_size=12)
    return st.dictionaries(names, values(ids), max_size=8)


_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def request(draw: st.DrawFn, ids: list[int]) -> tuple[str, str, bytes, dict[str, str]]:
    """(HTTP method, path, body, headers) for one fuzzed call."""
    # Mostly real methods; unknown names now and then (they must get a PanDA-style 404).
    name = draw(st.sampled_from(sorted(METHODS) * 4 + ["nope", "getJob2", "a.b", "%00", "getJob%20"]))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Accept"] = "application/json"
    kind = draw(st.sampled_from(["form", "gzip_json", "json", "query", "garbage", "bad_gzip", "gzip_noise"]))
    fields = draw(params(ids))
    body = b""
    verb = "POST"
    if kind == "form":
        body = urllib.parse.urlencode(fields).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind == "gzip_json":
        payload: Any = fields
        if draw(st.booleans()):  # numbers and flags as JSON types, as pilot 3.11 sends them
            payload = {k: draw(_JSON_VALUE) for k in fields}
        body = gzip.compress(json.dumps(payload).encode())
        if draw(st.booleans()):
            headers["Content-Type"] = "application/json"
    elif kind == "json":
        body = json.dumps(draw(_JSON_VALUE | st.just(fields))).encode()
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "text/plain", ""]))
    elif kind == "query":
        verb = draw(st.sampled_from(["GET", "POST"]))
        name = f"{name}?{urllib.parse.urlencode(fields)}"
    elif kind == "garbage":
        body = draw(st.binary(max_size=2000))
        headers["Content-Type"] = draw(
            st.sampled_from(
                ["application/x-www-form-urlencoded", "application/json", "multipart/form-data", ""]
            )
        )
    elif kind == "bad_gzip":
        good = gzip.compress(json.dumps(fields).encode())
        body = good[: draw(st.integers(min_value=2, max_value=max(2, len(good) - 1)))]
    else:  # gzip of bytes that are neither JSON nor a form
        body = gzip.compress(draw(st.binary(max_size=500)))
    return verb, f"/server/panda/{name}", body, {k: v for k, v in headers.items() if v}


def _check(target: Target, verb: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    before = target.snapshot()
    response = target.client.request(verb, path, content=body or None, headers=headers)
    assert response.status_code < 500, (verb, path, body[:200], response.status_code, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/json"):
        response.json()
    if response.status_code >= 400:
        assert "StatusCode" in response.text and "errorDialog" in response.text, response.text[:300]
        after = target.snapshot()
        changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
        assert not changed, (verb, path, body[:200], response.text[:200], changed)


def test_fuzzed_legacy_requests_never_500_nor_corrupt(target: Target) -> None:
    """Every method, every body encoding, plausible and garbage values."""

    @FUZZ
    @given(req=request(target.ids))
    def fuzz(req: tuple[str, str, bytes, dict[str, str]]) -> None:
        _check(target, *req)

    fuzz()


def test_fuzzed_pilot_updates_on_real_jobs(target: Target) -> None:
    """updateJob and getJob with the real jobs' IDs most of the time, in both pilot encodings."""

    @settings(FUZZ, max_examples=150)
    @given(
        name=st.sampled_from(["updateJob", "getJob", "updateJobsInBulk"]),
        fields=params(target.ids),
        job=st.sampled_from(target.ids),
        gz=st.booleans(),
    )
    def fuzz(name: str, fields: dict[str, Any], job: int, gz: bool) -> None:
        fields = {"jobId": str(job), "siteName": SITE, **fields}
        if gz:
            body, headers = gzip.compress(json.dumps(fields).encode()), {"Content-Type": "application/json"}
        else:
            body, headers = urllib.parse.urlencode(fields).encode(), {}
        _check(target, "POST", f"/server/panda/{name}", body, {"Accept": "application/json", **headers})

    fuzz()


def test_nul_characters_are_refused_or_kept_not_a_database_error(target: Target) -> None:
    """PostgreSQL cannot store NUL: in a name it is a 400, in a pilot's free text it is kept as U+FFFD."""
    for params in (
        {"siteName": "FUZZ\x00SITE"},
        {"siteName": SITE, "prodSourceLabel": "us\x00er"},
        {"siteName": SITE, "prodSourceLabel": "user", "node": "wn\x00"},
    ):
        response = target.client.post(
            "/server/panda/getJob", data=params, headers={"Accept": "application/json"}
        )
        assert response.status_code == 400 and "NUL" in response.json()["errorDialog"], response.text
    job = target.ids[0]  # sent by the fixture
    for params in (
        {"state": "running", "metaData": "a\x00b", "pilotErrorDiag": "x\x00y"},
        {"state": "running", "pilotLog": "tail\x00of the log"},
        {"state": "finished", "xml": json.dumps({"out.root": {"fsize": 1, "adler32": "0\x00"}})},
    ):
        response = target.client.post(
            "/server/panda/updateJob",
            data={"jobId": str(job), "attemptNr": "0", **params},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 200 and response.json()["StatusCode"] == 0, response.text
    described = target.client.post("/api/v1/job/get_description", json={"job_ids": [job]}).json()["data"][0]
    assert described["pilotErrorDiag"] == "x\ufffdy"


def test_number_range_edges_are_refusals_on_every_backend(target: Target) -> None:
    """MariaDB's FLOAT is single precision: a larger number is refused (submit) or dropped (update)."""

    def submit(**attrs: Any) -> httpx.Response:
        return target.client.post(
            "/api/v1/job/submit", json={"jobs": json.dumps([state_list(make_job(site=SITE, **attrs))])}
        )

    before = target.snapshot()
    refused = submit(cpuConversion=1e308)
    assert refused.status_code == 200 and refused.json()["success"] is False
    assert "cpuConversion is out of range" in refused.json()["message"]
    assert target.snapshot() == before
    assert submit(
        cpuConversion=3e38, jobDefinitionID=-(2**63), prodDBUpdateTime="9999-12-31 23:59:59"
    ).json()["success"]
    response = target.client.post(
        "/server/panda/updateJob",
        data={
            "jobId": str(target.ids[1]),
            "state": "running",
            "cpuConversionFactor": "1e308",
            "maxRSS": "12",
        },
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200 and response.json()["StatusCode"] == 0, response.text
    described = target.client.post("/api/v1/job/get_description", json={"job_ids": [target.ids[1]]}).json()
    assert described["data"][0]["maxRSS"] == 12 and described["data"][0]["jobStatus"] == "running"
