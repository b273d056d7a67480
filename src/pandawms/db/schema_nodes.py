"""Tables of the worker-node map: the hardware pilots find on the nodes they run on.

ATLAS pilots describe their node (CPU model, cores, memory, disk, architecture level) and its
GPUs once at start. The map lets operators see what hardware each site really offers. Names
follow the real server's ``worker_node``, ``worker_node_queue`` and ``worker_node_gpus``
tables; every text column is bounded and the API cuts what it stores to these sizes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table

from pandawms.db.schema_base import Timestamp, metadata

#: One row per (site, host, CPU model): the node's CPU description, refreshed on every report.
worker_node = Table(
    "worker_node",
    metadata,
    Column("site", String(128), primary_key=True),
    Column("host_name", String(128), primary_key=True),
    Column("cpu_model", String(128), primary_key=True),
    Column("cpu_model_normalized", String(128), nullable=True),
    Column("n_logical_cpus", Integer, nullable=True),
    Column("n_sockets", Integer, nullable=True),
    Column("cores_per_socket", Integer, nullable=True),
    Column("threads_per_core", Integer, nullable=True),
    Column("cpu_architecture", String(20), nullable=True),
    Column("cpu_architecture_level", String(20), nullable=True),
    Column("clock_speed", Float, nullable=True),
    Column("total_memory", BigInteger, nullable=True),
    Column("total_local_disk", BigInteger, nullable=True),
    Column("first_seen", Timestamp, nullable=False),
    Column("last_seen", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)

#: Which PanDA queues a node was seen serving (a node may serve several queues of its site).
worker_node_queue = Table(
    "worker_node_queue",
    metadata,
    Column("site", String(128), primary_key=True),
    Column("host_name", String(128), primary_key=True),
    Column("panda_queue", String(128), primary_key=True),
    Column("last_seen", Timestamp, nullable=False),
    Index("ix_worker_node_queue_queue", "panda_queue", "last_seen"),
    mysql_engine="InnoDB",
)

#: One row per (site, host, GPU vendor and model), with how many the node has.
worker_node_gpus = Table(
    "worker_node_gpus",
    metadata,
    Column("site", String(128), primary_key=True),
    Column("host_name", String(128), primary_key=True),
    Column("vendor", String(64), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("vram", BigInteger, nullable=True),
    Column("architecture", String(64), nullable=True),
    Column("framework", String(64), nullable=True),
    Column("framework_version", String(64), nullable=True),
    Column("driver_version", String(64), nullable=True),
    Column("last_seen", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)
