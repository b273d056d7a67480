"""The outbox of data-management operations (what the Adder must still tell Rucio).

A job's output registration, a replication rule to a task's destination and the closing of a
task's datasets are written here in the same transaction as the state change that asks for
them, and carried out afterwards by the daemon (:mod:`pandawms.core.tasks.outputs`). An outage
of the data management system therefore delays them (retried with back-off) but never loses
them: the row stays ``pending`` until the call succeeds, or is ``failed`` with the reason when
the system refuses it for good.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata

ddm_outbox = Table(
    "ddm_outbox",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    #: register (a job's outputs), close (a task's output datasets).
    Column("kind", String(16), nullable=False),
    Column("jediTaskID", BigInteger, nullable=True),
    Column("PandaID", BigInteger, nullable=True),
    #: What to do, as JSON (the files with their sizes and checksums, the RSE...).
    Column("payload", LongText, nullable=False),
    #: pending, done or failed.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    #: When a pending operation may be tried (again).
    Column("nextAttempt", Timestamp, nullable=False),
    Column("lastError", String(500), nullable=True),
    Column("creationTime", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_ddm_outbox_due", "status", "nextAttempt"),
    Index("ix_ddm_outbox_pandaid", "PandaID"),
    Index("ix_ddm_outbox_task", "jediTaskID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)
