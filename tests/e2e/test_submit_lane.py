"""Big submissions do not starve pilots: heartbeats keep being answered while they run.

One worker with two request threads on PostgreSQL; three users submit 2,000-job batches back
to back. Submissions run in their own lane, so the request threads stay free and a pilot's
heartbeats go on being answered throughout (when submissions held every request thread, a
heartbeat got through only when a submission ended). No speed is asserted: heartbeats were
answered while the submissions ran, at least one per submission, and none waited as long as a
round of submissions. (A count of several heartbeats per submission was asserted until
submissions wrote their rows with COPY and took a third of the time.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx

from tests.conftest import ServerProcess
from tests.e2e.test_backpressure import _heartbeat, _running_job
from tests.jobs import make_job, state_list

BATCH = 2000
ROUNDS = 2
SUBMITTERS = 3


def test_heartbeats_are_answered_while_big_batches_are_submitted(
    start_server: Callable[..., ServerProcess],
) -> None:
    from tests.dbs import BACKENDS

    url = BACKENDS["postgresql"].require()
    server = start_server(
        url, env={"PANDA_WORKERS": "1", "PANDA_WORKER_THREADS": "2", "PANDA_SUBMIT_LANES": "1"}
    )
    panda_id = _running_job(server.base)
    batch = json.dumps(
        [state_list(make_job(jobName=f"big-{i}", prodSourceLabel="user")) for i in range(BATCH)]
    )
    submitted: list[int] = []
    running = threading.Event()
    running.set()

    def submitter() -> None:
        for _ in range(ROUNDS):
            reply = httpx.post(server.base + "/api/v1/job/submit", json={"jobs": batch}, timeout=300)
            assert reply.status_code == 200 and reply.json()["success"], reply.text[:300]
            submitted.append(len(reply.json()["data"]))

    users = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    for user in users:
        user.start()
    answered = 0
    failures: list[str] = []
    started = time.monotonic()
    longest = 0.0
    while any(u.is_alive() for u in users):
        sent = time.monotonic()
        reply = _heartbeat(server.base, panda_id, timeout=300)
        longest = max(longest, time.monotonic() - sent)
        if reply.status_code == 200 and reply.json()["StatusCode"] == 0:
            if any(u.is_alive() for u in users):
                answered += 1
        else:
            failures.append(reply.text[:200])
        time.sleep(0.02)
    for user in users:
        user.join()
    elapsed = time.monotonic() - started
    print(f"heartbeats answered during submissions: {answered} in {elapsed:.2f} s, longest {longest:.3f} s")
    assert not failures, failures[:3]
    assert submitted == [BATCH] * (SUBMITTERS * ROUNDS)
    # Heartbeats kept coming while the submissions ran (how many depends on how long those
    # take), and none waited as long as a round of submissions: none queued behind one.
    assert answered >= SUBMITTERS * ROUNDS, (
        f"only {answered} heartbeats answered during {SUBMITTERS * ROUNDS} submissions"
    )
    assert longest < elapsed / ROUNDS, f"a heartbeat waited {longest:.2f} s of {elapsed:.2f} s"
