"""Property-based tests of the submit and update paths (hypothesis), through the ASGI app.

What must hold for *any* input, not just the examples the other tests chose:

* a submission is stored whole or refused whole: a refused one gets a 4xx with
  ``success: false`` and a message, and leaves every table exactly as it was;
* an accepted submission round-trips: ``job/get_description`` gives back what was sent;
* ``updateJob`` never fails with a 500, a refused update (4xx, ``StatusCode`` and
  ``errorDialog``) changes nothing, and whatever sequence of updates arrives, the job's history
  only contains moves the state table allows;
* the decoder and validator raise nothing but :class:`PandaError`, whatever JSON they get.

The app runs in-process on SQLite (the backends are covered by the other suites); examples
are bounded so the file takes well under a minute.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.testclient import TestClient

from pandawms.api.app import create_app
from pandawms.api.errors import status_of
from pandawms.api.jobspec_codec import decode_state_list
from pandawms.config import load_settings
from pandawms.core.jobs.submit import validate_jobs
from pandawms.core.runtime import Runtime
from pandawms.db.schema import metadata
from pandawms.db.versioning import init_schema
from pandawms.model.errors import PandaError, StatusCode
from pandawms.model.identity import Identity
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, FILE_TYPES, JOB_ATTRIBUTE_BY_NAME, JOB_ATTRIBUTES
from pandawms.model.states import is_allowed
from pandawms.model.values import FLOAT_MAX
from tests.jobs import state_list

#: The largest single-precision number within the server's FLOAT_MAX: a larger float32
#: (3.4000001549684603e38) is refused as out of range, as it should be.
_F32_MAX = 3.3999999521443642e38
assert _F32_MAX <= FLOAT_MAX

SITE = "PROP_SITE"
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class App:
    """The ASGI app on its own SQLite database, driven in-process."""

    def __init__(self, path: Path) -> None:
        self.rt = Runtime.from_settings(load_settings(None, {"db_url": f"sqlite:///{path}"}))
        init_schema(self.rt.engine)
        self.client = TestClient(create_app(self.rt), raise_server_exceptions=False)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table but the audit trail (which records refusals by design)."""
        with self.rt.engine.connect() as conn:
            return {
                table.name: sorted(
                    (tuple(map(repr, row)) for row in conn.execute(select(table))), key=lambda r: r
                )
                for table in metadata.sorted_tables
                if table.name != "audit_log"
            }

    def submit(self, jobs_value: Any) -> Any:
        return self.client.post("/api/v1/job/submit", json={"jobs": jobs_value})

    def update(self, params: dict[str, str]) -> Any:
        return self.client.post(
            "/server/panda/updateJob", data=params, headers={"Accept": "application/json"}
        )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    built = App(tmp_path_factory.mktemp("prop") / "prop.sqlite")
    yield built
    built.rt.engine.dispose()


# --- strategies -------------------------------------------------------------------------

_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _text(max_size: int, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(_TEXT, min_size=min_size, max_size=max_size).filter(
        lambda s: s.strip() != "" and s != "NULL"
    )


#: "NULL" is PanDA's unset marker on the wire: a name spelled so cannot be sent.
_NAME = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=40).filter(
    lambda s: s != "NULL"
)
_SMALL = st.integers(min_value=0, max_value=10**6)


@st.composite
def valid_file(draw: st.DrawFn, lfn: str) -> dict[str, Any]:
    """A file as panda-client fills it (unset attributes omitted: they travel as "NULL")."""
    f: dict[str, Any] = {"lfn": lfn, "type": draw(st.sampled_from(sorted(FILE_TYPES)))}
    f["dataset"] = draw(st.none() | _NAME)
    f["scope"] = draw(st.none() | st.text(string.ascii_lowercase + ".", min_size=1, max_size=30))
    f["fsize"] = draw(st.none() | _SMALL)
    f["checksum"] = draw(st.none() | st.from_regex(r"ad:[0-9a-f]{8}", fullmatch=True))
    f["GUID"] = draw(st.none() | st.uuids().map(str))
    return f


@st.composite
def valid_job(draw: st.DrawFn) -> dict[str, Any]:
    """A job that must be accepted, with its client-owned attributes drawn at random."""
    lfns = draw(st.lists(_NAME, max_size=3, unique=True))
    job: dict[str, Any] = {
        "jobDefinitionID": draw(st.integers(min_value=0, max_value=2**40)),
        "jobName": draw(_text(256)),
        "transformation": draw(_text(250)),
        "prodSourceLabel": draw(st.sampled_from(["user", "managed", "test", "ptest", "panda"])),
        "assignedPriority": draw(st.integers(min_value=-1000, max_value=10**6)),
        "computingSite": SITE,
        "jobParameters": draw(_text(2000)),
        "attemptNr": draw(st.integers(min_value=0, max_value=20)),
        "coreCount": draw(st.none() | st.integers(min_value=1, max_value=256)),
        "maxWalltime": draw(st.none() | _SMALL),
        "minRamCount": draw(st.none() | _SMALL),
        "cpuConversion": draw(st.none() | st.floats(min_value=-_F32_MAX, max_value=_F32_MAX, width=32)),
        "creationHost": draw(st.none() | _NAME),
        "VO": "atlas",
        "Files": [draw(valid_file(lfn)) for lfn in lfns],
    }
    # Numbers may travel as strings, as some clients send them.
    if draw(st.booleans()):
        job["attemptNr"] = str(job["attemptNr"])
    return job


def _wire(job: dict[str, Any]) -> list[Any]:
    return state_list(job)


_INT_NAMES = [a.name for a in JOB_ATTRIBUTES if a.kind == "int"]
_STR_NAMES = [a.name for a in JOB_ATTRIBUTES if a.kind == "str" and a.length]
_FLOAT_NAMES = [a.name for a in JOB_ATTRIBUTES if a.kind == "float"]
_DT_NAMES = [a.name for a in JOB_ATTRIBUTES if a.kind == "datetime"]
_JOB_INDEX = {a.name: i for i, a in enumerate(JOB_ATTRIBUTES)}
_FILE_INDEX = {name: i for i, name in enumerate(FILE_ATTRIBUTE_NAMES)}


@st.composite
def broken_state(draw: st.DrawFn, state: list[Any]) -> list[Any] | Any:
    """``state`` (a valid positional job) with one thing made invalid."""
    state = json.loads(json.dumps(state))
    kind = draw(
        st.sampled_from(
            [
                "int_garbage",
                "int_huge",
                "int_container",
                "float_huge",
                "str_too_long",
                "str_container",
                "str_nul",
                "datetime_garbage",
                "file_type",
                "file_lfn_missing",
                "file_not_list",
                "files_not_list",
                "job_not_list",
                "job_empty",
                "job_label",
            ]
        )
    )
    if kind == "int_garbage":
        name = draw(st.sampled_from(_INT_NAMES))
        state[_JOB_INDEX[name]] = draw(_NAME.filter(lambda s: not _numeric(s)))
    elif kind == "int_huge":
        state[_JOB_INDEX[draw(st.sampled_from(_INT_NAMES))]] = draw(
            st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)
        )
    elif kind == "int_container":
        state[_JOB_INDEX[draw(st.sampled_from(_INT_NAMES))]] = draw(st.sampled_from([[1], {"a": 1}, [], {}]))
    elif kind == "float_huge":  # past MariaDB's single-precision FLOAT
        state[_JOB_INDEX[draw(st.sampled_from(_FLOAT_NAMES))]] = draw(
            st.floats(min_value=3.5e38, max_value=1e308) | st.floats(min_value=-1e308, max_value=-3.5e38)
        )
    elif kind == "str_too_long":
        name = draw(st.sampled_from(_STR_NAMES))
        state[_JOB_INDEX[name]] = "x" * (JOB_ATTRIBUTE_BY_NAME[name].length + draw(st.integers(1, 50)))
    elif kind == "str_container":
        state[_JOB_INDEX[draw(st.sampled_from(_STR_NAMES))]] = draw(st.sampled_from([["a"], {"b": 2}]))
    elif kind == "str_nul":
        state[_JOB_INDEX[draw(st.sampled_from(_STR_NAMES))]] = "a\x00b"
    elif kind == "datetime_garbage":
        state[_JOB_INDEX[draw(st.sampled_from(_DT_NAMES))]] = draw(
            st.sampled_from(["yesterday", "2026-13-45", {"_datetime_object": "soon"}, [2026], "1e300"])
        )
    elif kind == "file_type":
        state[-1] = state[-1] or [_wire({"Files": [{"lfn": "x.root", "type": "input"}]})[-1][0]]
        state[-1][0][_FILE_INDEX["type"]] = draw(_NAME.filter(lambda s: s not in FILE_TYPES))
    elif kind == "file_lfn_missing":
        state[-1] = state[-1] or [_wire({"Files": [{"lfn": "x.root", "type": "input"}]})[-1][0]]
        state[-1][0][_FILE_INDEX["lfn"]] = draw(st.sampled_from(["NULL", None, ""]))
    elif kind == "file_not_list":
        state[-1] = [draw(st.sampled_from([5, "file", True]))]
    elif kind == "files_not_list":
        state[-1] = draw(st.sampled_from([5, "files", {"lfn": "x"}]))
    elif kind == "job_not_list":
        return draw(st.sampled_from([5, "job", None, True]))
    elif kind == "job_empty":
        return []
    elif kind == "job_label":
        state[_JOB_INDEX["job_label"]] = draw(_NAME.filter(lambda s: s not in ("user", "managed")))
    return state


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- submit -----------------------------------------------------------------------------


def _assert_refused(response: Any) -> None:
    # A refused submission is HTTP 200 with success false (as the real server answers), or a
    # 4xx for a body that cannot be read or is too large.
    assert response.status_code == 200 or 400 <= response.status_code < 500, (
        response.status_code,
        response.text,
    )
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert isinstance(body["message"], str) and body["message"], body


@PROPERTY
@given(jobs=st.lists(valid_job(), min_size=1, max_size=3))
def test_valid_submissions_round_trip(app: App, jobs: list[dict[str, Any]]) -> None:
    """Every accepted job reads back with the attributes and files it was sent with."""
    response = app.submit(json.dumps([_wire(j) for j in jobs]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"], body
    ids = [answer[0] for answer in body["data"]]
    assert len(ids) == len(jobs) and len(set(ids)) == len(ids)
    described = app.client.post("/api/v1/job/get_description", json={"job_ids": ids}).json()["data"]
    for sent, got in zip(jobs, described, strict=True):
        for name in ("jobDefinitionID", "jobName", "transformation", "prodSourceLabel", "computingSite"):
            assert got[name] == sent[name], name
        assert got["jobParameters"] == sent["jobParameters"]
        assert got["attemptNr"] == int(sent["attemptNr"])
        assert got["assignedPriority"] == got["currentPriority"] == sent["assignedPriority"]
        for name in ("coreCount", "maxWalltime", "minRamCount"):
            assert got[name] == (sent[name] if sent[name] is not None else got[name]), name
        if sent["cpuConversion"] is not None:
            assert got["cpuConversion"] == pytest.approx(sent["cpuConversion"], rel=1e-6, abs=1e-30)
        assert got["jobStatus"] == "activated"
        by_lfn = {f["lfn"]: f for f in got["Files"]}
        assert set(by_lfn) == {f["lfn"] for f in sent["Files"]}
        for f in sent["Files"]:
            stored = by_lfn[f["lfn"]]
            assert stored["type"] == f["type"] and stored["PandaID"] == got["PandaID"]
            for name in ("dataset", "checksum"):
                assert stored[name] == f[name], name
            named = f["type"] in ("output", "log")  # the server gives these a GUID and scope
            for name in ("scope", "GUID"):
                if f[name] is not None or not named:
                    assert stored[name] == f[name], name
            if named and f["GUID"] is None:
                assert str(uuid.UUID(stored["GUID"])) == stored["GUID"]
            assert stored["fsize"] == (f["fsize"] or 0)


@PROPERTY
@given(data=st.data(), jobs=st.lists(valid_job(), min_size=1, max_size=3))
def test_invalid_submissions_are_refused_whole(
    app: App, data: st.DataObject, jobs: list[dict[str, Any]]
) -> None:
    """One bad job in a batch: a 4xx with a message, and not one row written for any job."""
    states = [_wire(j) for j in jobs]
    victim = data.draw(st.integers(min_value=0, max_value=len(states) - 1))
    states[victim] = data.draw(broken_state(states[victim]))
    before = app.snapshot()
    _assert_refused(app.submit(json.dumps(states)))
    assert app.snapshot() == before


@PROPERTY
@given(
    value=st.one_of(
        st.text(_TEXT, max_size=50),
        st.integers(),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    )
)
def test_jobs_argument_of_any_shape_never_500(app: App, value: Any) -> None:
    """``jobs`` that is not a JSON string of job lists: refused (or, if it happens to be one, fine)."""
    before = app.snapshot()
    response = app.submit(value)
    assert response.status_code != 500, response.text
    if response.status_code != 200 or not response.json()["success"]:
        _assert_refused(response)
        assert app.snapshot() == before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(raw=_JSON)
def test_decoder_and_validator_raise_only_panda_errors(
    tmp_path_factory: pytest.TempPathFactory, raw: Any
) -> None:
    """Core level: any JSON value is decoded and validated, or refused with a PandaError."""
    rt = _core_rt(tmp_path_factory)
    try:
        validate_jobs(decode_state_list(raw), Identity(), rt)
    except PandaError as exc:
        assert exc.message and 400 <= status_of(exc) < 500


_RT: list[Runtime] = []


def _core_rt(factory: pytest.TempPathFactory) -> Runtime:
    if not _RT:
        _RT.append(
            Runtime.from_settings(
                load_settings(None, {"db_url": f"sqlite:///{factory.mktemp('core') / 'core.sqlite'}"})
            )
        )
    return _RT[0]


# --- updateJob --------------------------------------------------------------------------

_STATES = ["starting", "running", "holding", "transferring", "finished", "failed", "bogus", "", "NULL"]


@st.composite
def update_params(draw: st.DrawFn, panda_id: int, attempt: int) -> dict[str, str]:
    """One updateJob form, mostly plausible, sometimes broken in one field."""
    params: dict[str, str] = {
        "jobId": draw(
            st.sampled_from([str(panda_id)] * 6 + ["999999999", "abc", "-1", "", "NULL", "1e3", str(2**64)])
        ),
        "state": draw(st.sampled_from(_STATES)),
    }
    attempt_choice = draw(st.sampled_from(["right", "right", "right", "wrong", "none", "garbage"]))
    if attempt_choice == "right":
        params["attemptNr"] = str(attempt)
    elif attempt_choice == "wrong":
        params["attemptNr"] = str(attempt + 1)
    elif attempt_choice == "garbage":
        params["attemptNr"] = draw(st.sampled_from(["x", "-5", "1.5", str(2**70)]))
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "maxRSS",
                    "cpuConsumptionTime",
                    "startTime",
                    "endTime",
                    "nEvents",
                    "pilotErrorCode",
                    "coreCount",
                ]
            ),
            max_size=3,
            unique=True,
        )
    ):
        params[name] = draw(
            st.sampled_from(["12", "0", "-3", "1795549595.1", "NaN", "inf", "abc", "", str(10**30)])
        )
    if draw(st.booleans()):
        params["pilotErrorDiag"] = draw(st.text(_TEXT, max_size=600))
    if params["state"] in ("finished", "failed") and draw(st.booleans()):
        params["xml"] = draw(
            st.sampled_from(
                [
                    json.dumps({"out.root": {"guid": "g", "fsize": 10, "adler32": "0988eb14"}}),
                    "{not json",
                    "[1, 2]",
                    "<POOLFILECATALOG><File ID='g'><logical><lfn name='out.root'/></logical></File>",
                    "",
                ]
            )
        )
    return params


def _dispatch_one(app: App) -> tuple[int, int]:
    job = {
        "jobDefinitionID": 1,
        "jobName": "prop-update",
        "transformation": "run.sh",
        "prodSourceLabel": "user",
        "computingSite": SITE,
        "jobParameters": "x",
        "Files": [{"lfn": "out.root", "type": "output"}],
    }
    response = app.submit(json.dumps([_wire(job)]))
    assert response.status_code == 200, response.text
    sent = app.client.post(
        "/server/panda/getJob",
        data={"siteName": SITE, "prodSourceLabel": "user", "node": "wn"},
        headers={"Accept": "application/json"},
    ).json()
    assert sent["StatusCode"] == 0, sent
    return int(sent["PandaID"]), int(sent["attemptNr"])


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_update_sequences_keep_the_state_machine(app: App, data: st.DataObject) -> None:
    """Any sequence of updates: no 500, refusals change nothing, history moves are allowed."""
    panda_id, attempt = _dispatch_one(app)
    for params in data.draw(st.lists(update_params(panda_id, attempt), min_size=1, max_size=6)):
        before = app.snapshot()
        response = app.update(params)
        assert response.status_code != 500, (params, response.text)
        body = response.json()
        assert isinstance(body["StatusCode"], int), body
        if response.status_code >= 400:
            assert 400 <= response.status_code < 500 and body["StatusCode"] != 0, body
            assert body["errorDialog"], body
            assert app.snapshot() == before, params
        else:
            assert response.status_code == 200 and isinstance(body["command"], str), body
    with app.rt.engine.connect() as conn:
        from pandawms.db.schema import job_status_log, jobs

        history = [
            (r.oldStatus, r.jobStatus)
            for r in conn.execute(
                select(job_status_log.c.oldStatus, job_status_log.c.jobStatus)
                .where(job_status_log.c.PandaID == panda_id)
                .order_by(job_status_log.c.id)
            )
        ]
        current = conn.execute(select(jobs.c.jobStatus).where(jobs.c.PandaID == panda_id)).scalar()
    for old, new in history:
        if old is not None:
            assert is_allowed(old, new), history
    for (_, first), (second, _) in zip(history, history[1:], strict=False):
        assert first == second, history
    if current is not None:
        assert current == history[-1][1], (current, history)


def test_refused_update_keeps_panda_error_shape(app: App) -> None:
    """A broken jobId is an INVALID StatusCode with a dialog, as pilots expect."""
    response = app.update({"jobId": "abc", "state": "running"})
    assert response.status_code == 400
    assert response.json()["StatusCode"] == int(StatusCode.INVALID) and response.json()["errorDialog"]
