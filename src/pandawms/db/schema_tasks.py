"""Tables of the task layer (what JEDI keeps for prun/pathena tasks) and of the sandbox cache.

Names follow JEDI's where a client or an operator sees them (jediTaskID, taskName, status,
datasetName, lfn, attemptNr...). Dataset and file counters are not stored: they are counted from
``task_files`` when asked for, so they can never drift from the files themselves.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata

#: One row per task.
tasks = Table(
    "tasks",
    metadata,
    Column("jediTaskID", IdType, primary_key=True, autoincrement=True),
    Column("taskName", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("oldStatus", String(16), nullable=True),
    Column("superStatus", String(16), nullable=True),
    #: Compact user name (as prodUserName of the jobs) and the submitter's DN.
    Column("userName", String(128), nullable=False),
    Column("dn", String(250), nullable=True),
    #: 1 when the submitter held the production role (its jobs are made with that role).
    Column("prodRole", Integer, nullable=False),
    Column("vo", String(32), nullable=True),
    Column("prodSourceLabel", String(20), nullable=True),
    Column("taskType", String(32), nullable=True),
    Column("processingType", String(64), nullable=True),
    Column("workingGroup", String(32), nullable=True),
    Column("site", String(128), nullable=True),
    Column("cloud", String(50), nullable=True),
    Column("reqID", BigInteger, nullable=True),
    Column("parent_tid", BigInteger, nullable=True),
    Column("taskPriority", Integer, nullable=True),
    Column("currentPriority", Integer, nullable=True),
    Column("coreCount", Integer, nullable=True),
    Column("ramCount", Integer, nullable=True),
    Column("walltime", Integer, nullable=True),
    Column("maxAttempt", Integer, nullable=False),
    Column("maxFailure", Integer, nullable=False),
    #: How many times the task was retried or reactivated.
    Column("attemptNr", Integer, nullable=False),
    Column("transPath", String(250), nullable=True),
    Column("transUses", String(64), nullable=True),
    Column("transHome", String(128), nullable=True),
    Column("architecture", String(250), nullable=True),
    Column("container_name", String(200), nullable=True),
    #: Serial number the next job's output files get (``${SN}``).
    Column("nextSerialNr", Integer, nullable=False),
    Column("errorDialog", String(510), nullable=True),
    Column("creationDate", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Column("stateChangeTime", Timestamp, nullable=True),
    Column("startTime", Timestamp, nullable=True),
    Column("endTime", Timestamp, nullable=True),
    #: Since when ready files could not be placed at any queue (None while work flows).
    Column("frozenTime", Timestamp, nullable=True),
    #: Operator settings JEDI keeps on the task (task/change_split_rule, reassign, shares...).
    Column("splitRule", String(1000), nullable=True),
    Column("gshare", String(32), nullable=True),
    Column("nucleus", String(52), nullable=True),
    Column("cpuTime", Integer, nullable=True),
    #: "mode:multiplicity:num_sites" while job cloning is enabled.
    Column("jobCloning", String(64), nullable=True),
    #: Jumbo jobs (task/enable_jumbo_jobs): useJumbo W on / D switched off; core/tasks/jumbo.py.
    Column("useJumbo", String(1), nullable=True),
    Column("numJumboJobs", Integer, nullable=True),
    Column("numJumboJobsPerSite", Integer, nullable=True),
    Index("ix_tasks_user_mod", "userName", "modificationTime"),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_name", "taskName"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: The parameters as submitted (JSON) and the job parameter template made from them.
task_params = Table(
    "task_params",
    metadata,
    Column("jediTaskID", BigInteger, primary_key=True, autoincrement=False),
    Column("taskParams", LongText, nullable=False),
    Column("jobParamsTemplate", LongText, nullable=True),
    mysql_engine="InnoDB",
)

#: Input, pseudo-input, output and log datasets of each task.
task_datasets = Table(
    "task_datasets",
    metadata,
    Column("datasetID", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Column("datasetName", String(255), nullable=False),
    Column("containerName", String(255), nullable=True),
    Column("type", String(20), nullable=False),
    Column("streamName", String(32), nullable=True),
    Column("status", String(20), nullable=False),
    #: LFN template of output and log files (``$JEDITASKID`` already replaced).
    Column("template", String(1000), nullable=True),
    Column("storageToken", String(64), nullable=True),
    Column("destination", String(128), nullable=True),
    Column("allowNoOutput", Integer, nullable=False),
    Column("creationTime", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_task_datasets_task", "jediTaskID"),
    Index("ix_task_datasets_name", "datasetName"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Where a task's input dataset is: the disk RSEs holding every file the task uses of it (JEDI's
#: dataset locality), read from the data management system when the task is refined. Brokerage
#: sends the task's jobs only to queues that read one of them.
task_dataset_rses = Table(
    "task_dataset_rses",
    metadata,
    Column("datasetID", BigInteger, primary_key=True),
    Column("rse", String(64), primary_key=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Index("ix_task_dataset_rses_task", "jediTaskID"),
    mysql_engine="InnoDB",
)

#: Files of the task datasets. Input files carry the attempt bookkeeping; the job currently
#: processing a file is ``PandaID``.
task_files = Table(
    "task_files",
    metadata,
    Column("fileID", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Column("datasetID", BigInteger, nullable=False),
    Column("type", String(20), nullable=False),
    Column("lfn", String(1000), nullable=False),
    Column("scope", String(30), nullable=True),
    Column("GUID", String(64), nullable=True),
    Column("fsize", BigInteger, nullable=True),
    Column("checksum", String(36), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attemptNr", Integer, nullable=False),
    Column("maxAttempt", Integer, nullable=False),
    Column("failedAttempt", Integer, nullable=False),
    Column("maxFailure", Integer, nullable=False),
    Column("PandaID", BigInteger, nullable=True),
    #: Events this (pseudo) file stands for: [startEvent, endEvent], 0-based.
    Column("startEvent", BigInteger, nullable=True),
    Column("endEvent", BigInteger, nullable=True),
    #: Files made and processed together (one job's input chunk).
    Column("chunkNr", Integer, nullable=True),
    Column("creationDate", Timestamp, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_task_files_task", "jediTaskID", "datasetID", "status"),
    Index("ix_task_files_pandaid", "PandaID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: One row per task status change.
task_status_log = Table(
    "task_status_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Column("status", String(16), nullable=False),
    Column("oldStatus", String(16), nullable=True),
    Column("reason", String(250), nullable=True),
    Index("ix_task_status_log_task", "jediTaskID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: One row per operator change of a task's settings (priority, attributes, site, share...):
#: the task's history next to its status log.
task_change_log = Table(
    "task_change_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("jediTaskID", BigInteger, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Column("attribute", String(64), nullable=False),
    Column("oldValue", String(250), nullable=True),
    Column("newValue", String(250), nullable=True),
    Column("changedBy", String(128), nullable=True),
    Index("ix_task_change_log_task", "jediTaskID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Sandboxes and other files users upload to the cache (served at /cache/<fileName>).
cache_files = Table(
    "cache_files",
    metadata,
    Column("fileName", String(255), primary_key=True),
    Column("userName", String(128), nullable=False),
    Column("hostName", String(128), nullable=True),
    Column("fileSize", BigInteger, nullable=False),
    #: CRC32 from the gzip trailer, as panda-client computes it for reuse checks.
    Column("checksum", String(32), nullable=True),
    Column("creationTime", Timestamp, nullable=False),
    #: Last use (upload, reuse, referenced by a task); expiry counts from here.
    Column("modificationTime", Timestamp, nullable=False),
    Index("ix_cache_files_reuse", "userName", "fileSize", "checksum"),
    Index("ix_cache_files_mod", "modificationTime"),
    mysql_engine="InnoDB",
)
