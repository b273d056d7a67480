"""Tables the monitor reads instead of scanning the job tables on every cold page load.

With a million live jobs and the status log of an ATLAS day (millions of rows), counting live
jobs by queue and status and bucketing the status log for the chart take seconds; every httpd
worker of every node would pay that on its first page. The ``monitor_rollup`` daemon task (one
node for the fleet, under its lease) keeps these small tables current instead, and pages add
only the status-log rows written since its last run.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from pandawms.db.schema_base import Timestamp, metadata

#: Status-log rows per 5-minute bucket and new status (every chart bucket size is a multiple).
monitor_status_buckets = Table(
    "monitor_status_buckets",
    metadata,
    Column("bucketStart", Timestamp, primary_key=True),
    Column("jobStatus", String(15), primary_key=True),
    Column("n", BigInteger, nullable=False),
    mysql_engine="InnoDB",
)

#: Live jobs by queue and status as counted at the rollup's last run.
monitor_live_counts = Table(
    "monitor_live_counts",
    metadata,
    Column("computingSite", String(128), primary_key=True),
    Column("jobStatus", String(15), primary_key=True),
    Column("n", BigInteger, nullable=False),
    mysql_engine="InnoDB",
)

#: Progress of the rollup: the newest status-log id folded into the buckets, and when the
#: buckets and live counts were last brought up to date. One row, name 'status_log'.
monitor_rollup_state = Table(
    "monitor_rollup_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("lastLogID", BigInteger, nullable=False),
    Column("updated", Timestamp, nullable=False),
    mysql_engine="InnoDB",
)
