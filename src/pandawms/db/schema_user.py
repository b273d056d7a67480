"""Tables of what users and pilots keep on the server besides jobs and tasks.

User secrets (pbook set_secret, read back by the user and by the pilot of a debug job), the
payload output a pilot streams for a job in debug mode, and the requests waiting for the
service that acts on them (lost-file recovery, workflows, event picking).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata

#: One row per user: every secret of the user in one encrypted JSON object (as the real
#: server's Secrets table keeps one JSON document per owner). ``data`` is a Fernet token.
user_secrets = Table(
    "user_secrets",
    metadata,
    #: Compact user name of the owner (prodUserName form).
    Column("owner", String(128), primary_key=True),
    Column("data", LongText, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: The last stdout tail a pilot sent for a job in debug mode (the real server's jobsDebug).
job_debug_output = Table(
    "job_debug_output",
    metadata,
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("stdOut", LongText, nullable=True),
    Column("modificationTime", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: pbook recover_lost_files requests, kept until the recovery service takes them.
file_recovery_requests = Table(
    "file_recovery_requests",
    metadata,
    Column("requestID", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Column("userName", String(128), nullable=False),
    Column("dn", String(250), nullable=True),
    #: 1 for a dry run (pbook's test mode): report what would be recovered, change nothing.
    Column("dryRun", Integer, nullable=False),
    Column("isProductionManager", Integer, nullable=False),
    #: pending (waiting for the service), then whatever the service records (done, failed...).
    Column("status", String(16), nullable=False),
    Column("creationTime", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_file_recovery_status", "status"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Requests users leave for a service that acts on them later: workflow descriptions
#: (``file_server/upload_workflow_request``, for the workflow processor) and event-picking
#: requests (``file_server/upload_event_picking_request``, for the event picker). The real
#: server writes each as a file in its cache directory; here they are rows the service takes.
user_requests = Table(
    "user_requests",
    metadata,
    Column("requestID", IdType, primary_key=True, autoincrement=True),
    #: workflow or event_picking.
    Column("kind", String(16), nullable=False),
    Column("userName", String(128), nullable=False),
    Column("dn", String(250), nullable=True),
    #: pending (waiting for the service), then whatever the service records (done, failed...).
    Column("status", String(16), nullable=False),
    #: The request as JSON (what the real server's request file holds).
    Column("payload", LongText, nullable=False),
    Column("creationTime", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_user_requests_kind_status", "kind", "status"),
    Index("ix_user_requests_user", "userName", "status"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)
