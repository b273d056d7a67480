"""Tables of the asynchronous requests operators send to the server machines.

``async_process/submit_grep_request`` and ``submit_sleep_echo_request`` leave a row in
``async_requests``; the daemon of each machine the request names claims it in
``async_results`` (one row per machine, or one shared row for "any one machine"), runs it and
writes the result there; ``async_process/get_result`` reads both. ``machine_heartbeat`` says
which machines of a service are alive, so a request knows whose answers to wait for.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from pandawms.db.schema_base import LongText, Timestamp, metadata

machine_heartbeat = Table(
    "machine_heartbeat",
    metadata,
    Column("machine_name", String(255), primary_key=True),
    Column("service_name", String(64), nullable=False),
    Column("last_seen", Timestamp, nullable=False),
    Index("ix_machine_heartbeat_service", "service_name", "last_seen"),
    mysql_engine="InnoDB",
)

async_requests = Table(
    "async_requests",
    metadata,
    #: A UUID, given to the caller to poll with.
    Column("request_id", String(36), primary_key=True),
    #: grep or sleep_echo.
    Column("request_type", String(32), nullable=False),
    Column("service_name", String(64), nullable=True),
    #: One machine, or "any" (exactly one machine of the service); NULL: every alive machine.
    Column("machine_name", String(255), nullable=True),
    #: JSON: the request's arguments plus requester and access.
    Column("parameters", Text, nullable=False),
    #: JSON list of the machines expected to answer.
    Column("expected_machines", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_async_requests_created", "created_at"),
    mysql_engine="InnoDB",
)

async_results = Table(
    "async_results",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("machine_name", String(255), primary_key=True),
    #: running, pending (to be retried), done or failed.
    Column("status", String(16), nullable=False),
    Column("result", LongText, nullable=True),
    Column("truncated", Integer, nullable=False, default=0),
    Column("error_msg", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("started_at", Timestamp, nullable=True),
    Column("finished_at", Timestamp, nullable=True),
    Column("stderr", LongText, nullable=True),
    Column("return_code", Integer, nullable=True),
    Index("ix_async_results_machine", "machine_name", "status"),
    mysql_engine="InnoDB",
)
