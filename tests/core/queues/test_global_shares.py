"""Global shares on every backend: the share furthest below its target is dispatched first."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pandawms.config import ConfigError, load_settings
from pandawms.core.jobs import dispatch, submit
from pandawms.core.queues import shares
from pandawms.core.runtime import Runtime
from pandawms.model.identity import Identity
from pandawms.model.shares import parse_shares, share_order
from pandawms.monitor.queries.why import why_not_running
from tests.jobs import make_job

ALICE = Identity(dn="/DC=org/CN=Alice Smith", method="x509")
SHARES = "MC Simulation Full=80, User Analysis=20"


def test_parse_and_order() -> None:
    assert parse_shares("A=3,B=1") == {"A": 0.75, "B": 0.25}
    assert parse_shares("") == {}
    for bad, word in (("A", "NAME=WEIGHT"), ("A=x", "not a number"), ("A=-1", ">= 0"), ("A=1,A=2", "twice")):
        with pytest.raises(ValueError, match=word):
            parse_shares(bad)
    targets = parse_shares("A=50,B=50")
    assert share_order(targets, {}) == ["A", "B"]  # tie: by target, then name
    assert share_order(targets, {"A": 9, "B": 1}) == ["B", "A"]
    assert share_order(targets, {"A": 1, "B": 9, "unlisted": 100}) == ["A", "B"]


def test_a_bad_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="global_shares: weight of share 'A' is not a number"):
        load_settings(None, {"global_shares": "A=lots"})


def _submit(rt: Runtime, share: str, priority: int, n: int) -> list[int]:
    jobs_ = [
        make_job(jobName=f"{share}-{i}", gshare=share, currentPriority=priority, assignedPriority=priority)
        for i in range(n)
    ]
    return [a[0] for a in submit.submit_jobs(rt, jobs_, ALICE)]


def _take(rt: Runtime, n: int) -> list[int]:
    req = dispatch.DispatchRequest(site="TEST_SITE", n_jobs=n, prod_source_label="user", node="wn1")
    return [j["PandaID"] for j in dispatch.acquire_jobs(rt, req, ALICE)]


def test_dispatch_follows_the_shares(
    db_url: str, make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shares, "USAGE_TTL", 0.0)  # recount running jobs on every dispatch
    rt = make_runtime(db_url, global_shares=SHARES)
    mc = _submit(rt, "MC Simulation Full", 100, 4)
    analysis = _submit(rt, "User Analysis", 5000, 4)
    loose = _submit(rt, "", 9000, 1)  # no share at all: after every configured share
    # Nothing runs: MC is furthest below its 80 %, so its jobs go first despite lower priority.
    assert _take(rt, 3) == mc[:3]
    # Now MC holds 100 % of the busy jobs: analysis (0 % of a 20 % target) comes first.
    assert _take(rt, 1) == analysis[:1]
    # 3 MC and 1 analysis busy: MC 75 % < 80 %, so MC again; it has one job left, then analysis.
    assert _take(rt, 2) == [mc[3], analysis[1]]
    # Explaining a waiting job names its share's place.
    why = why_not_running(rt, analysis[2])
    assert set(why["facts"]["global_shares"]) == {"MC Simulation Full", "User Analysis"}
    assert _take(rt, 10) == analysis[2:] + loose


def test_without_shares_priority_alone(db_url: str, make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(db_url)
    mc = _submit(rt, "MC Simulation Full", 100, 2)
    analysis = _submit(rt, "User Analysis", 5000, 2)
    assert _take(rt, 4) == analysis + mc


def test_why_says_the_share_is_over_target(
    db_url: str, make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shares, "USAGE_TTL", 0.0)
    rt = make_runtime(db_url, global_shares=SHARES)
    _submit(rt, "User Analysis", 5000, 2)
    assert len(_take(rt, 2)) == 2  # analysis now holds every busy slot: 100 % of a 20 % target
    waiting = _submit(rt, "User Analysis", 5000, 1)[0]
    _submit(rt, "MC Simulation Full", 100, 1)
    why = why_not_running(rt, waiting)
    share_reason = [r for r in why["reasons"] if r.startswith("share User Analysis")]
    assert share_reason == [
        "share User Analysis is over its target (100% of busy jobs, target 20%): "
        "jobs of shares further below target at TEST_SITE go first (1 of MC Simulation Full)"
    ], why
