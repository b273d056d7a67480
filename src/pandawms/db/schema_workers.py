"""Tables of the Harvester interface: instances, workers, the worker<->job links, worker
statistics and the commands Harvester polls for.

Column names are Harvester's and PanDA's (harvesterID, workerID, computingSite, PandaID...), so
an operator comparing this database with Harvester's own sees the same names. They are part of
schema version 1 and are created by ``pandawms db init`` with the rest (this module is imported
by :mod:`pandawms.db.schema`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata

#: One row per Harvester instance: who runs it, where, and when it was last heard from.
harvester_instances = Table(
    "harvester_instances",
    metadata,
    Column("harvesterID", String(50), primary_key=True),
    Column("owner", String(128), nullable=True),
    Column("hostName", String(128), nullable=True),
    Column("lastUpdate", Timestamp, nullable=False),
    Column("startTime", Timestamp, nullable=True),
    Column("sw_version", String(64), nullable=True),
    Column("commit_stamp", String(100), nullable=True),
    Column("description", String(250), nullable=True),
    #: Every other key of the heartbeat's ``data``, as JSON (the real server adds columns).
    Column("attributes", LongText, nullable=True),
    mysql_engine="InnoDB",
)

#: One row per worker (a batch job that runs pilots), keyed as Harvester keys it.
harvester_workers = Table(
    "harvester_workers",
    metadata,
    Column("harvesterID", String(50), primary_key=True),
    Column("workerID", BigInteger, primary_key=True, autoincrement=False),
    Column("batchID", String(80), nullable=True),
    Column("queueName", String(80), nullable=True),
    Column("status", String(16), nullable=False),
    Column("computingSite", String(128), nullable=True),
    Column("computingElement", String(128), nullable=True),
    Column("resourceType", String(56), nullable=True),
    Column("jobType", String(32), nullable=True),
    Column("nCore", Integer, nullable=True),
    Column("minRamCount", Integer, nullable=True),
    Column("nJobs", Integer, nullable=True),
    Column("nodeID", String(128), nullable=True),
    Column("submissionHost", String(128), nullable=True),
    Column("harvesterHost", String(128), nullable=True),
    Column("submitTime", Timestamp, nullable=True),
    Column("startTime", Timestamp, nullable=True),
    Column("endTime", Timestamp, nullable=True),
    Column("lastUpdate", Timestamp, nullable=False),
    Column("nativeExitCode", Integer, nullable=True),
    Column("nativeStatus", String(80), nullable=True),
    Column("errorCode", Integer, nullable=True),
    Column("diagMessage", String(500), nullable=True),
    Column("stdOut", String(500), nullable=True),
    Column("stdErr", String(500), nullable=True),
    Column("batchLog", String(500), nullable=True),
    Column("jdl", String(500), nullable=True),
    #: What the pilot inside the worker says (updateWorkerPilotStatus), next to Harvester's view.
    Column("pilotStatus", String(16), nullable=True),
    Column("pilotStartTime", Timestamp, nullable=True),
    Column("pilotEndTime", Timestamp, nullable=True),
    #: When the worker sync last told Harvester about a pilot it had not noticed ending.
    Column("pilotStatusSyncTime", Timestamp, nullable=True),
    Index("ix_harvester_workers_site", "computingSite", "status"),
    Index("ix_harvester_workers_update", "lastUpdate"),
    mysql_engine="InnoDB",
)

#: Which worker runs (or ran) which job; a worker can run several jobs and a job several workers.
harvester_rel_jobs_workers = Table(
    "harvester_rel_jobs_workers",
    metadata,
    Column("harvesterID", String(50), primary_key=True),
    Column("workerID", BigInteger, primary_key=True, autoincrement=False),
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("lastUpdate", Timestamp, nullable=False),
    Index("ix_harvester_rel_pandaid", "PandaID"),
    mysql_engine="InnoDB",
)

#: Worker counts each instance reports per queue, job type, resource type and worker status.
harvester_worker_stats = Table(
    "harvester_worker_stats",
    metadata,
    Column("harvesterID", String(50), primary_key=True),
    Column("computingSite", String(128), primary_key=True),
    Column("jobType", String(32), primary_key=True),
    Column("resourceType", String(56), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("n_workers", Integer, nullable=False),
    Column("lastUpdate", Timestamp, nullable=False),
    Index("ix_harvester_worker_stats_update", "lastUpdate"),
    mysql_engine="InnoDB",
)

#: Commands waiting for (status ``new``) or handed to (``retrieved``) a Harvester instance.
harvester_commands = Table(
    "harvester_commands",
    metadata,
    Column("command_id", IdType, primary_key=True, autoincrement=True),
    Column("harvesterID", String(50), nullable=False),
    Column("command", String(100), nullable=False),
    #: JSON; Harvester receives it decoded.
    Column("params", LongText, nullable=True),
    Column("ack_requested", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("creation_date", Timestamp, nullable=False),
    Column("status_date", Timestamp, nullable=False),
    Index("ix_harvester_commands_poll", "harvesterID", "status", "command_id"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Service metrics an instance sends (memory, CPU, certificate lifetimes...), as it sent them.
harvester_metrics = Table(
    "harvester_metrics",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("harvesterID", String(50), nullable=False),
    Column("hostName", String(128), nullable=True),
    Column("creationTime", Timestamp, nullable=False),
    #: JSON.
    Column("metrics", LongText, nullable=True),
    Index("ix_harvester_metrics_time", "harvesterID", "creationTime"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Messages an instance's agents want operators to see (Harvester's "dialogs").
harvester_dialogs = Table(
    "harvester_dialogs",
    metadata,
    Column("harvesterID", String(50), primary_key=True),
    Column("diagID", BigInteger, primary_key=True, autoincrement=False),
    Column("moduleName", String(100), nullable=True),
    Column("identifier", String(100), nullable=True),
    Column("creationTime", Timestamp, nullable=True),
    Column("messageLevel", String(10), nullable=True),
    Column("diagMessage", String(500), nullable=True),
    Index("ix_harvester_dialogs_time", "creationTime"),
    mysql_engine="InnoDB",
)

#: Target slots operators set for a queue to build up job pressure (``harvester/add_target_slots``,
#: the real server's Harvester_Slots). Brokerage treats a queue with slots as if that many cores
#: were already running there. An empty gshare or resourceType means the whole queue (the real
#: table's NULL), so that one key names each target and the primary key keeps it unique.
harvester_slots = Table(
    "harvester_slots",
    metadata,
    Column("pandaQueueName", String(128), primary_key=True),
    Column("gshare", String(32), primary_key=True),
    Column("resourceType", String(56), primary_key=True),
    Column("numSlots", Integer, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    #: NULL: the target holds until changed.
    Column("expirationTime", Timestamp, nullable=True),
    mysql_engine="InnoDB",
)
