"""Tables of server configuration operators edit, and of logs Harvester uploads.

``resource_types`` is PanDA's table of job resource types (SCORE, MCORE, ...): the core and
memory-per-core ranges that Harvester and the pilot read to classify workers and jobs.
``jedi_logs`` records the worker logs Harvester's propagator uploads into the cache, so the
monitor can link a job to the logs of the workers that ran it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from pandawms.db.schema_base import Timestamp, metadata

#: One row per resource type; a null bound is "no limit" (PanDA's convention).
resource_types = Table(
    "resource_types",
    metadata,
    Column("resource_name", String(56), primary_key=True),
    Column("mincore", Integer, nullable=True),
    Column("maxcore", Integer, nullable=True),
    Column("minrampercore", Integer, nullable=True),
    Column("maxrampercore", Integer, nullable=True),
    mysql_engine="InnoDB",
)

#: Worker logs in ``<cache_dir>/jedilog``; harvesterID/workerID are set when the file name is one
#: a worker reported as its stdOut, stdErr, batchLog or jdl URL.
jedi_logs = Table(
    "jedi_logs",
    metadata,
    Column("fileName", String(200), primary_key=True),
    Column("harvesterID", String(50), nullable=True),
    Column("workerID", BigInteger, nullable=True),
    Column("fileSize", BigInteger, nullable=False),
    Column("uploadedBy", String(128), nullable=True),
    Column("modificationTime", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)
