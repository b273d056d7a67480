"""The event service's table: the event ranges of event-service jobs (JEDI's JEDI_Events).

One row per range of events of one input file. Ranges are pooled per job set (``jobsetID``):
every consumer job of the set takes ranges from the same pool, so a pilot that dies loses only
the ranges it held, which go back to the pool for the others.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, UniqueConstraint

from pandawms.db.schema_base import IdType, Timestamp, metadata

event_ranges = Table(
    "event_ranges",
    metadata,
    Column("rangeID", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    #: The pool the range belongs to: the job set of the event-service jobs made for it.
    Column("jobsetID", BigInteger, nullable=False),
    #: The consumer job holding the range (None while it waits in the pool).
    Column("PandaID", BigInteger, nullable=True),
    Column("datasetID", BigInteger, nullable=True),
    Column("fileID", BigInteger, nullable=False),
    Column("lfn", String(1000), nullable=False),
    Column("GUID", String(64), nullable=True),
    Column("scope", String(30), nullable=True),
    #: Position of the range within its file (the fourth field of the eventRangeID).
    Column("job_processID", Integer, nullable=False),
    Column("startEvent", BigInteger, nullable=False),
    Column("lastEvent", BigInteger, nullable=False),
    #: ready, sent, running, finished, failed, cancelled, fatal (model/event_states.py).
    Column("status", String(16), nullable=False),
    #: Times the range was handed out (the fifth field of the eventRangeID).
    Column("attemptNr", Integer, nullable=False),
    #: Times it failed or was lost with its consumer; at ``maxAttempt`` it becomes fatal.
    Column("failedAttempt", Integer, nullable=False),
    Column("maxAttempt", Integer, nullable=False),
    #: Who holds it: the owner DN of the credential that took it.
    Column("holder", String(250), nullable=True),
    #: Set by the claim that handed the range out, so that claim reads back exactly its rows.
    Column("claimToken", String(36), nullable=True),
    Column("objstoreID", String(64), nullable=True),
    Column("pathConvention", Integer, nullable=True),
    Column("zipLFN", String(255), nullable=True),
    Column("coreCount", Integer, nullable=True),
    Column("cpuConsumptionTime", Float, nullable=True),
    Column("errorCode", Integer, nullable=True),
    Column("errorDiag", String(500), nullable=True),
    Column("creationTime", Timestamp, nullable=False),
    Column("dispatchTime", Timestamp, nullable=True),
    Column("modificationTime", Timestamp, nullable=False),
    UniqueConstraint("jediTaskID", "fileID", "job_processID", name="uq_event_ranges_position"),
    Index("ix_event_ranges_pool", "jobsetID", "status", "rangeID"),
    Index("ix_event_ranges_pandaid", "PandaID"),
    Index("ix_event_ranges_claim", "claimToken"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)
