"""The job model: attribute table, state table and value conversion."""

from __future__ import annotations

import datetime as dt

import pytest

from pandawms.model.identity import clean_user_id
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ATTRIBUTE_BY_NAME, JOB_ATTRIBUTE_NAMES
from pandawms.model.states import ALLOWED_MOVES, TERMINAL, IllegalMove, JobStatus, check_move, is_allowed
from pandawms.model.values import BadValue, coerce, parse_datetime


def test_job_attributes_match_the_real_client() -> None:
    jobspec = pytest.importorskip("pandaclient.JobSpec")
    assert JOB_ATTRIBUTE_NAMES == tuple(jobspec.JobSpec._attributes)
    filespec = pytest.importorskip("pandaclient.FileSpec")
    client_files = tuple(filespec.FileSpec._attributes)
    assert FILE_ATTRIBUTE_NAMES[: len(client_files)] == client_files


def test_every_status_has_a_row_and_terminal_states_are_final() -> None:
    assert set(ALLOWED_MOVES) == set(JobStatus)
    for status in TERMINAL:
        assert ALLOWED_MOVES[status] == frozenset()
    for targets in ALLOWED_MOVES.values():
        assert targets <= set(JobStatus)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("activated", "sent"),
        ("sent", "starting"),
        ("starting", "running"),
        ("running", "holding"),
        ("holding", "finished"),
        ("holding", "failed"),
        ("running", "cancelled"),
        ("defined", "activated"),
        ("running", "transferring"),
        ("transferring", "holding"),
    ],
)
def test_the_normal_path_is_allowed(old: str, new: str) -> None:
    assert is_allowed(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("finished", "running"),
        ("failed", "activated"),
        ("running", "starting"),
        ("running", "finished"),
        ("activated", "running"),
        ("holding", "running"),
        ("cancelled", "cancelled"),
        ("bogus", "running"),
    ],
)
def test_illegal_moves_are_refused(old: str, new: str) -> None:
    assert not is_allowed(old, new)
    with pytest.raises(IllegalMove, match=f"from {old} to {new}"):
        check_move(old, new, 7)


def test_coerce_types_and_null() -> None:
    prio = JOB_ATTRIBUTE_BY_NAME["currentPriority"]
    assert coerce(prio, "NULL") is None
    assert coerce(prio, "12") == 12
    assert coerce(prio, 12.0) == 12
    with pytest.raises(BadValue, match="currentPriority must be an integer"):
        coerce(prio, "abc")
    site = JOB_ATTRIBUTE_BY_NAME["computingSite"]
    with pytest.raises(BadValue, match="computingSite is longer than 128"):
        coerce(site, "x" * 129)
    assert coerce(JOB_ATTRIBUTE_BY_NAME["pilotErrorDiag"], "y" * 900, truncate=True) == "y" * 500
    created = coerce(
        JOB_ATTRIBUTE_BY_NAME["creationTime"], {"_datetime_object": "2026-01-02 03:04:05.600000"}
    )
    assert created == dt.datetime(2026, 1, 2, 3, 4, 5, 600000)


def test_parse_datetime_spellings() -> None:
    assert parse_datetime("2026-11-24T19:46:35+00:00") == dt.datetime(2026, 11, 24, 19, 46, 35)
    assert parse_datetime("1795549595.5").year == 2026
    with pytest.raises(BadValue):
        parse_datetime("yesterday")


@pytest.mark.parametrize(
    ("dn", "name"),
    [
        ("/DC=ch/DC=cern/OU=Users/CN=jdoe/CN=123456/CN=Jane Doe/CN=proxy", "Jane Doe"),
        ("/DC=org/O=Test/CN=Test User 42", "Test User"),
        ("/CN=Jane Doe/CN=nickname:jdoe", "Jane Doe"),
    ],
)
def test_clean_user_id(dn: str, name: str) -> None:
    assert clean_user_id(dn) == name
