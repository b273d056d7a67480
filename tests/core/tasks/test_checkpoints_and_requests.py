"""HPO checkpoints (who may write them, where they go, when they expire) and the workflow and
event-picking requests left for services (limits, claiming)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from pandawms.core.runtime import Runtime
from pandawms.core.tasks import checkpoints, user_requests
from pandawms.core.tasks import commands as tasks
from pandawms.model.errors import Forbidden, PandaError, TooLarge
from pandawms.model.identity import Identity
from tests.core.tasks.test_tasks import JANE, JOHN, _queue, prun_params

BOSS = Identity(dn="/DC=org/CN=Boss", roles=frozenset({"user", "production"}), method="x509")


def test_checkpoints_of_a_task_are_its_owners(make_runtime: Any, db_url: str) -> None:
    rt: Runtime = make_runtime(db_url, auth_mode="strict")
    _queue(rt)
    task_id = tasks.submit_task(rt, prun_params(), JANE).data
    path = checkpoints.store(rt, JANE, f"some/dir/{task_id}_p1", b"w1")
    assert path.name == f"hpo_cp_{task_id}_p1" and path.read_bytes() == b"w1"
    with pytest.raises(Forbidden):
        checkpoints.store(rt, JOHN, f"{task_id}_p1", b"mine")
    with pytest.raises(Forbidden):
        checkpoints.store(rt, JOHN, "999999_p1", b"no such task")
    checkpoints.store(rt, BOSS, "999999_p1", b"production may")
    with pytest.raises(Forbidden):
        checkpoints.delete(rt, JOHN, str(task_id), "p1")
    checkpoints.delete(rt, JANE, str(task_id), "p1")
    assert not path.exists()


def test_checkpoint_names_sizes_and_expiry(make_runtime: Any, tmp_path: Any) -> None:
    rt: Runtime = make_runtime(f"sqlite:///{tmp_path / 'cp.sqlite'}", hpo_checkpoint_max_bytes=1024)
    for bad in ("x_..", "1_a/b", ".hidden_1", "1_" + "x" * 80):
        with pytest.raises(PandaError):
            checkpoints.store(rt, BOSS, bad, b"x")
    with pytest.raises(TooLarge, match="Exceeded size limit 2000>1024"):
        checkpoints.store(rt, BOSS, "1_2", b"x" * 2000)
    old = checkpoints.store(rt, BOSS, "1_old", b"x")
    new = checkpoints.store(rt, BOSS, "1_new", b"x")
    stale = time.time() - rt.settings.cache_lifetime - 60
    os.utime(old, (stale, stale))
    assert checkpoints.expire(rt) == 1
    assert not old.exists() and new.exists()


def test_requests_wait_bounded_and_are_taken_once(sqlite_rt: Runtime) -> None:
    user_requests.store_workflow(sqlite_rt, JANE, json.dumps({"steps": []}))
    user_requests.store_event_picking(sqlite_rt, JANE, {"eventPickDataType": "AOD"}, "1 2\n3 4\n", False)
    with pytest.raises(TooLarge):
        user_requests.store_workflow(
            sqlite_rt, JANE, json.dumps({"x": "y" * user_requests.WORKFLOW_MAX_BYTES})
        )
    taken = user_requests.take_pending(sqlite_rt, user_requests.EVENT_PICKING)
    assert [(r["eventPickDataType"], r["runEvent"]) for _, r in taken] == [("AOD", [["1", "2"], ["3", "4"]])]
    assert user_requests.take_pending(sqlite_rt, user_requests.EVENT_PICKING) == []
    for _ in range(user_requests.MAX_PENDING_PER_USER - 1):
        user_requests.store_workflow(sqlite_rt, JANE, "{}")
    with pytest.raises(user_requests.TooManyPending, match="50 workflow requests waiting"):
        user_requests.store_workflow(sqlite_rt, JANE, "{}")
    user_requests.store_workflow(sqlite_rt, JOHN, "{}")  # another user is not held up
