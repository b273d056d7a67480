"""Tables of the data carousel: staging requests for input that is only on tape.

Names follow the real server's ``data_carousel_requests`` and ``data_carousel_relations``
(operators and the v1 ``data_carousel/*`` methods speak of ``request_id``, ``ddm_rule_id``,
``source_rse``...). One request stages one dataset and is shared by every task that needs it
(the relations table); its progress counters come from the data management system's rule.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table

from pandawms.db.schema_base import IdType, LongText, Timestamp, metadata

#: One row per staging of a dataset from tape to disk.
data_carousel_requests = Table(
    "data_carousel_requests",
    metadata,
    Column("request_id", IdType, primary_key=True, autoincrement=True),
    #: The dataset as ``scope:name``.
    Column("dataset", String(256), nullable=False),
    Column("source_rse", String(64), nullable=True),
    Column("destination_rse", String(64), nullable=True),
    Column("ddm_rule_id", String(64), nullable=True),
    #: queued, staging, done, cancelled, retired (model/carousel.py).
    Column("status", String(16), nullable=False),
    Column("total_files", BigInteger, nullable=True),
    Column("staged_files", BigInteger, nullable=True),
    Column("dataset_size", BigInteger, nullable=True),
    Column("staged_size", BigInteger, nullable=True),
    Column("creation_time", Timestamp, nullable=False),
    Column("start_time", Timestamp, nullable=True),
    Column("end_time", Timestamp, nullable=True),
    Column("modification_time", Timestamp, nullable=False),
    #: When the watcher last read the rule.
    Column("check_time", Timestamp, nullable=True),
    Column("source_tape", String(64), nullable=True),
    #: JSON: excluded_dst_list, prev_src, prev_dst, resub_from, task_id, task_type, task_user...
    Column("parameters", LongText, nullable=True),
    Column("last_staged_time", Timestamp, nullable=True),
    Index("ix_dc_requests_dataset_status", "dataset", "status"),
    Index("ix_dc_requests_status", "status"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

#: Which tasks wait for which requests.
data_carousel_relations = Table(
    "data_carousel_relations",
    metadata,
    Column("request_id", BigInteger, primary_key=True),
    Column("task_id", BigInteger, primary_key=True),
    Index("ix_dc_relations_task", "task_id"),
    mysql_engine="InnoDB",
)
