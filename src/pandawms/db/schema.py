"""The tables, as SQLAlchemy Core.

Column names are PanDA's attribute names (PandaID, jobStatus, computingSite...) so an operator
reading the database sees the names the clients use. Live jobs sit in ``jobs``; final jobs move
to ``jobs_archive`` with the same columns, which keeps the table that dispatch scans small.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    event,
    text,
)
from sqlalchemy.types import TypeEngine

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata
from pandawms.model.jobspec import FILE_ATTRIBUTES, JOB_COLUMNS, Attribute

#: Bumped by every migration; ``pandawms db check`` compares it with the database's row.
CODE_SCHEMA_VERSION = 3


def _column_type(attr: Attribute) -> TypeEngine:
    if attr.kind == "int":
        return BigInteger()
    if attr.kind == "float":
        return Float()
    if attr.kind == "datetime":
        return Timestamp
    if attr.kind == "text":
        return LongText
    return String(attr.length)


def _job_columns(autoincrement: bool) -> list[Column]:
    cols: list[Column] = []
    for attr in JOB_COLUMNS:
        if attr.name == "PandaID":
            cols.append(Column("PandaID", IdType, primary_key=True, autoincrement=autoincrement))
        else:
            cols.append(Column(attr.name, _column_type(attr), nullable=True))
    # Written by updateJob but not part of the client's JobSpec.
    cols.append(Column("meanCoreCount", Float, nullable=True))
    # Who took the job at dispatch, so that only they report on it (core/jobs/pilot_binding.py).
    cols.append(Column("dispatchDN", String(250), nullable=True))
    cols.append(Column("dispatchRole", String(16), nullable=True))
    cols.append(Column("dispatchNode", String(128), nullable=True))
    return cols


#: Job columns the server keeps for itself: never sent to clients.
SERVER_JOB_COLUMNS = ("meanCoreCount", "dispatchDN", "dispatchRole", "dispatchNode")


jobs = Table(
    "jobs",
    metadata,
    *_job_columns(autoincrement=True),
    Index("ix_jobs_status", "jobStatus", "PandaID"),
    Index("ix_jobs_task", "jediTaskID"),
    Index("ix_jobs_user", "prodUserName"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Dispatch reads "activated jobs of this queue, highest currentPriority first, then lowest
#: PandaID" and stops after a few rows. The index holds exactly that order (priority descending,
#: PandaID ascending), so the scan starts at the right row; with an ascending priority column the
#: database would have to read and sort every job that ties on the top priority, which for a big
#: task is tens of thousands of rows per getJob (70 ms at 1M live jobs, benchmarks/growth.py).
Index(
    "ix_jobs_dispatch",
    jobs.c.computingSite,
    jobs.c.jobStatus,
    jobs.c.currentPriority.desc(),
    jobs.c.PandaID,
)

# Heartbeats rewrite modificationTime many times per job: with no index on it and free room
# on each page, PostgreSQL updates the row in place (HOT) instead of adding an entry to every
# index of the table for every heartbeat. The job table is a queue: every dispatch leaves a
# dead entry at the head of the dispatch index, and a new task can change what the planner
# should do within seconds (without statistics it planned dispatch as a sort of every activated
# job, benchmarks/README.md). So autovacuum visits it after 2 % of its rows changed, not 20 %.
event.listen(
    jobs,
    "after_create",
    DDL(
        "ALTER TABLE jobs SET (fillfactor = 80,"
        " autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)"
    ).execute_if(dialect="postgresql"),
)

jobs_archive = Table(
    "jobs_archive",
    metadata,
    *_job_columns(autoincrement=False),
    Index("ix_jobs_archive_mod", "modificationTime"),
    Index("ix_jobs_archive_task", "jediTaskID"),
    Index("ix_jobs_archive_user", "prodUserName"),
    mysql_engine="InnoDB",
)


def _file_columns() -> list[Column]:
    cols: list[Column] = []
    for attr in FILE_ATTRIBUTES:
        if attr.name == "rowID":
            cols.append(Column("rowID", IdType, primary_key=True, autoincrement=True))
        elif attr.name == "PandaID":
            cols.append(Column("PandaID", BigInteger, nullable=False))
        else:
            cols.append(Column(attr.name, _column_type(attr), nullable=True))
    cols.append(Column("modificationTime", Timestamp, nullable=True))
    return cols


files = Table(
    "files",
    metadata,
    *_file_columns(),
    Index("ix_files_pandaid", "PandaID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

job_params = Table(
    "job_params",
    metadata,
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("jobParameters", LongText, nullable=True),
    mysql_engine="InnoDB",
)

job_metadata = Table(
    "job_metadata",
    metadata,
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("metaData", LongText, nullable=True),
    mysql_engine="InnoDB",
)

#: What the pilot reported at the end (the output file report), kept for the record.
job_output_reports = Table(
    "job_output_reports",
    metadata,
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("attemptNr", Integer, nullable=True),
    Column("jobStatus", String(15), nullable=False),
    Column("data", LongText, nullable=True),
    Column("timeStamp", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: Pilot log tails sent with the final update.
pilot_logs = Table(
    "pilot_logs",
    metadata,
    Column("PandaID", BigInteger, primary_key=True, autoincrement=False),
    Column("log", LongText, nullable=True),
    Column("timeStamp", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: One row per status change: the job's history.
job_status_log = Table(
    "job_status_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("PandaID", BigInteger, nullable=False),
    Column("modificationTime", Timestamp, nullable=False),
    Column("jobStatus", String(15), nullable=False),
    Column("oldStatus", String(15), nullable=True),
    Column("prodSourceLabel", String(20), nullable=True),
    Column("computingSite", String(128), nullable=True),
    Column("modificationHost", String(128), nullable=True),
    Column("attemptNr", Integer, nullable=True),
    Column("reason", String(250), nullable=True),
    Index("ix_status_log_pandaid", "PandaID"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: PanDA queues (sites), from CRIC's schedconfig JSON: the fields brokerage filters on, plus the
#: whole definition as the pilots fetch it.
queues = Table(
    "queues",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("state", String(16), nullable=True),
    Column("type", String(32), nullable=True),
    Column("corecount", Integer, nullable=True),
    Column("maxrss", BigInteger, nullable=True),
    Column("maxtime", BigInteger, nullable=True),
    Column("cloud", String(50), nullable=True),
    Column("site", String(128), nullable=True),
    Column("data", LongText, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("updated", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: Users refused everywhere (by compact name, as prodUserName holds it).
banned_users = Table(
    "banned_users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("reason", String(500), nullable=True),
    Column("banned_by", String(250), nullable=True),
    Column("created", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: Every state-changing call: who, what, on which targets, and how it ended.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("time", Timestamp, nullable=False),
    Column("identity", String(250), nullable=False),
    Column("auth_method", String(16), nullable=False),
    Column("remote", String(64), nullable=True),
    Column("method", String(100), nullable=False),
    Column("targets", String(1000), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("message", String(500), nullable=True),
    Column("request_id", String(32), nullable=True),
    Index("ix_audit_time", "time"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: How far each message stream has published the status log.
mq_cursor = Table(
    "mq_cursor",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_id", BigInteger, nullable=False),
    mysql_engine="InnoDB",
)

#: Fleet-wide daemon tasks: who may run each task until when. One row per task.
daemon_leases = Table(
    "daemon_leases",
    metadata,
    Column("task", String(64), primary_key=True),
    Column("owner", String(200), nullable=True),
    Column("expires", Timestamp, nullable=False),
    Column("acquired", Timestamp, nullable=True),
    mysql_engine="InnoDB",
)

#: One row per daemon task run: when, where, how long and how it ended.
daemon_runs = Table(
    "daemon_runs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("task", String(64), nullable=False),
    Column("node", String(200), nullable=False),
    Column("started", Timestamp, nullable=False),
    Column("finished", Timestamp, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("message", String(1000), nullable=True),
    Index("ix_daemon_runs_task", "task", "started"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: The schema version this database is at (one row per component).
schema_version = Table(
    "schema_version",
    metadata,
    Column("component", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated", Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    mysql_engine="InnoDB",
)

SCHEMA_COMPONENT = "pandawms"

#: Job cloning (a task's ``enable_job_cloning``): the clone of a jobset that took its one
#: semaphore. ``runonce``: the first clone to start running takes it and the others are ended;
#: ``storeonce``: the first clone to finish takes it and only its output is kept.
job_clone_semaphores = Table(
    "job_clone_semaphores",
    metadata,
    Column("jediTaskID", BigInteger, primary_key=True, autoincrement=False),
    Column("jobsetID", BigInteger, primary_key=True, autoincrement=False),
    Column("PandaID", BigInteger, nullable=False),
    Column("lockTime", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)
