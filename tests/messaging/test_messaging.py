"""Job status messages through a real broker (RabbitMQ's STOMP plugin), read back by stomp.py."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pytest

from pandawms.core.jobs import dispatch, heartbeat, submit
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.messaging.publisher import publish_status_changes
from pandawms.model.identity import Identity
from tests.jobs import make_job

BROKER = os.environ.get("PANDA_TEST_STOMP", "127.0.0.1:61613")


def _broker_up() -> bool:
    host, port = BROKER.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def subscriber():  # noqa: ANN201
    if not _broker_up():
        reason = f"no STOMP broker at {BROKER} (rabbitmq-plugins enable rabbitmq_stomp)"
        if os.environ.get("PANDA_TEST_REQUIRE_DBS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    stomp = pytest.importorskip("stomp")
    destination = f"/queue/pandawms-test-{uuid.uuid4().hex[:8]}"
    received: list[dict] = []
    arrived = threading.Event()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc,name-defined]
        def on_message(self, frame) -> None:  # noqa: ANN001
            received.append(json.loads(frame.body))
            arrived.set()

    host, port = BROKER.split(":")
    conn = stomp.Connection([(host, int(port))])
    conn.set_listener("", Listener())
    conn.connect("guest", "guest", wait=True)
    conn.subscribe(destination=destination, id="1", ack="auto")
    yield destination, received
    conn.disconnect()


def test_status_changes_reach_the_broker_once_in_order(db_url: str, make_runtime, subscriber) -> None:  # noqa: ANN001
    destination, received = subscriber
    host, port = BROKER.split(":")
    rt = make_runtime(
        db_url, mq_url=f"stomp://guest:guest@{host}:{port}/", mq_destination=destination, mq_lag=0
    )
    who = Identity(dn="/CN=Messenger")
    (panda_id,) = (a[0] for a in submit.submit_jobs(rt, [make_job()], who))
    dispatch.acquire_jobs(rt, dispatch.DispatchRequest("TEST_SITE", prod_source_label="user"), who)
    for state in ("starting", "running", "finished"):
        heartbeat.update_job(rt, PilotUpdate(panda_id, state, 0))
    assert publish_status_changes(rt) == 6
    assert publish_status_changes(rt) == 0  # cursor moved: nothing sent twice
    deadline = time.monotonic() + 10
    while len(received) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m["status"] for m in received] == [
        "activated",
        "sent",
        "starting",
        "running",
        "holding",
        "finished",
    ]
    assert all(m["jobid"] == panda_id and m["msg_type"] == "job_status" for m in received)
    assert received[1]["previous_status"] == "activated" and received[1]["computingsite"] == "TEST_SITE"
