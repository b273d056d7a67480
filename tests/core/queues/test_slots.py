"""Target slots of queues (harvester/add_target_slots) and how brokerage counts them, on every backend."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pandawms.core.jobs import read as jobs_read
from pandawms.core.jobs import submit
from pandawms.core.queues import slots
from pandawms.core.queues.catalogue import load_queues
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity
from tests.jobs import make_job

WHO = Identity(dn="/CN=Slot Tester")
QUEUES = {
    "SCORE_A": {"status": "online", "type": "unified", "corecount": 1},
    "SCORE_B": {"status": "online", "type": "unified", "corecount": 1},
    "MCORE_B": {"status": "online", "type": "unified", "corecount": 8},
}


def _sites(rt: Runtime, n: int, **attrs: object) -> list[str | None]:
    answers = submit.submit_jobs(rt, [make_job(site=None, **attrs) for _ in range(n)], WHO)
    jobs = jobs_read.get_descriptions(rt, [a[0] for a in answers], include_archive=False)
    return [j["computingSite"] for j in jobs if j is not None]


def test_set_update_expire_and_remove(rt: Runtime) -> None:
    message = slots.set_slots(rt, "SCORE_B", 100, None, None, None)
    assert message == "set numSlots=100 for PQ=SCORE_B gshare=None resource=None"
    slots.set_slots(rt, "SCORE_B", 40, "User Analysis", "SCORE", "2")
    slots.set_slots(rt, "SCORE_B", 50, "User Analysis", "SCORE", "3")  # an update, not a second row
    slots.set_slots(rt, "SCORE_A", 7, None, None, "2000-01-01")  # already expired
    with read_tx(rt.engine) as conn:
        rows = slots.list_slots(conn)
        active = slots.active_slots(conn, ["SCORE_A", "SCORE_B"])
    assert [(r["pandaQueueName"], r["gshare"], r["resourceType"], r["numSlots"]) for r in rows] == [
        ("SCORE_A", "", "", 7),
        ("SCORE_B", "", "", 100),
        ("SCORE_B", "User Analysis", "SCORE", 50),
    ]
    expiry = next(r["expirationTime"] for r in rows if r["numSlots"] == 50)
    assert abs(expiry - (utcnow() + dt.timedelta(days=3))) < dt.timedelta(minutes=1)
    assert active == {"SCORE_B": {None: {None: 100}, "User Analysis": {"SCORE": 50}}}
    slots.set_slots(rt, "SCORE_B", -1, None, None, None)
    with read_tx(rt.engine) as conn:
        assert slots.active_slots(conn, ["SCORE_B"]) == {"SCORE_B": {"User Analysis": {"SCORE": 50}}}


@pytest.mark.parametrize(
    ("queue", "number", "share", "days", "error"),
    [
        ("", 1, None, None, "panda_queue must not be empty"),
        ("../etc", 1, None, None, "is not a valid name"),
        ("Q", -5, None, None, "slots must be -1"),
        ("Q", 1, "x" * 40, None, "global_share"),
        ("Q", 1, None, "soon", "expiration_date must be a number of days or a date"),
        ("Q", 1, None, "99999", "between 0 and 3650 days"),
    ],
)
def test_bad_arguments_are_refused(
    sqlite_rt: Runtime, queue: str, number: int, share: str | None, days: str | None, error: str
) -> None:
    with pytest.raises(PandaError, match=error):
        slots.set_slots(sqlite_rt, queue, number, share, None, days)


def test_standby_lookup_follows_the_real_rules() -> None:
    targets = {None: {None: 10, "MCORE": 80}, "Express": {"SCORE": 5}}
    assert slots.standby_slots(targets, "Express", "SCORE") == 5
    assert slots.standby_slots(targets, "Express", "MCORE") is None
    assert slots.standby_slots(targets, "Other", "MCORE") == 80
    assert slots.standby_slots(targets, "Other", "SCORE_HIMEM") == 10
    assert slots.standby_slots(targets, "Other", None) == 90
    assert slots.standby_slots({"Express": {None: 3}}, "Other", None) is None


def test_brokerage_builds_pressure_where_slots_are_set(rt: Runtime) -> None:
    load_queues(rt, json.dumps(QUEUES))
    # Without targets two equal queues share the work.
    assert sorted(_sites(rt, 4)) == ["SCORE_A", "SCORE_A", "SCORE_B", "SCORE_B"]
    # 100 slots at SCORE_B: it counts as 100 running, so the next jobs all go there.
    slots.set_slots(rt, "SCORE_B", 100, None, None, None)
    assert _sites(rt, 6) == ["SCORE_B"] * 6
    # Removed, and set for another share only: SCORE_B (8 queued) no longer pulls this share's
    # jobs, which go to the emptier SCORE_A, while that share's jobs still go to SCORE_B.
    slots.set_slots(rt, "SCORE_B", -1, None, None, None)
    slots.set_slots(rt, "SCORE_B", 500, "Express", None, None)
    assert _sites(rt, 3, gshare="User Analysis") == ["SCORE_A"] * 3
    assert _sites(rt, 3, gshare="Express") == ["SCORE_B"] * 3


def test_slots_count_cores_not_jobs(rt: Runtime) -> None:
    load_queues(rt, json.dumps(QUEUES))
    # 16 slots at an 8-core queue are 2 running jobs: a 3rd multi-core job makes it even.
    slots.set_slots(rt, "MCORE_B", 16, None, None, None)
    with read_tx(rt.engine) as conn:
        targets = slots.active_slots(conn, ["MCORE_B"])["MCORE_B"]
    assert slots.standby_slots(targets, None, None) == 16
    from pandawms.core.queues.brokerage import Load

    assert Load(queued=2, running=0).weight_with(16, 8) == 1.0
    assert Load(queued=2, running=5).weight_with(16, 8) == 2.0
    assert Load(queued=0, running=0).weight_with(None, 8) == 1.0
