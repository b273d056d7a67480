"""Schema version 2: pilot binding, worker nodes, resource types, worker logs, user secrets, task changes,
debug output, file-recovery requests and the RSEs holding a task's input.

New tables are created whole; ``jobs`` and ``jobs_archive`` gain three nullable columns (who a job
was dispatched to) and ``tasks`` eight (operator settings), which every backend adds without
rewriting the table.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the version 2 tables and columns."""
    op.create_table(
        "file_recovery_requests",
        sa.Column(
            "requestID",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("jediTaskID", sa.BigInteger(), nullable=False),
        sa.Column("userName", sa.String(length=128), nullable=False),
        sa.Column("dn", sa.String(length=250), nullable=True),
        sa.Column("dryRun", sa.Integer(), nullable=False),
        sa.Column("isProductionManager", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "creationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("requestID"),
        mysql_engine="InnoDB",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("file_recovery_requests", schema=None) as batch_op:
        batch_op.create_index("ix_file_recovery_status", ["status"], unique=False)

    op.create_table(
        "jedi_logs",
        sa.Column("fileName", sa.String(length=200), nullable=False),
        sa.Column("harvesterID", sa.String(length=50), nullable=True),
        sa.Column("workerID", sa.BigInteger(), nullable=True),
        sa.Column("fileSize", sa.BigInteger(), nullable=False),
        sa.Column("uploadedBy", sa.String(length=128), nullable=True),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("fileName"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "job_debug_output",
        sa.Column("PandaID", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "stdOut",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("PandaID"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "resource_types",
        sa.Column("resource_name", sa.String(length=56), nullable=False),
        sa.Column("mincore", sa.Integer(), nullable=True),
        sa.Column("maxcore", sa.Integer(), nullable=True),
        sa.Column("minrampercore", sa.Integer(), nullable=True),
        sa.Column("maxrampercore", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("resource_name"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "task_change_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("jediTaskID", sa.BigInteger(), nullable=False),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column("attribute", sa.String(length=64), nullable=False),
        sa.Column("oldValue", sa.String(length=250), nullable=True),
        sa.Column("newValue", sa.String(length=250), nullable=True),
        sa.Column("changedBy", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        mysql_engine="InnoDB",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("task_change_log", schema=None) as batch_op:
        batch_op.create_index("ix_task_change_log_task", ["jediTaskID"], unique=False)

    op.create_table(
        "task_dataset_rses",
        sa.Column("datasetID", sa.BigInteger(), nullable=False),
        sa.Column("rse", sa.String(length=64), nullable=False),
        sa.Column("jediTaskID", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("datasetID", "rse"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("task_dataset_rses", schema=None) as batch_op:
        batch_op.create_index("ix_task_dataset_rses_task", ["jediTaskID"], unique=False)

    op.create_table(
        "user_secrets",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column(
            "data",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("owner"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "worker_node",
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("host_name", sa.String(length=128), nullable=False),
        sa.Column("cpu_model", sa.String(length=128), nullable=False),
        sa.Column("cpu_model_normalized", sa.String(length=128), nullable=True),
        sa.Column("n_logical_cpus", sa.Integer(), nullable=True),
        sa.Column("n_sockets", sa.Integer(), nullable=True),
        sa.Column("cores_per_socket", sa.Integer(), nullable=True),
        sa.Column("threads_per_core", sa.Integer(), nullable=True),
        sa.Column("cpu_architecture", sa.String(length=20), nullable=True),
        sa.Column("cpu_architecture_level", sa.String(length=20), nullable=True),
        sa.Column("clock_speed", sa.Float(), nullable=True),
        sa.Column("total_memory", sa.BigInteger(), nullable=True),
        sa.Column("total_local_disk", sa.BigInteger(), nullable=True),
        sa.Column(
            "first_seen",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "last_seen",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("site", "host_name", "cpu_model"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "worker_node_gpus",
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("host_name", sa.String(length=128), nullable=False),
        sa.Column("vendor", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("vram", sa.BigInteger(), nullable=True),
        sa.Column("architecture", sa.String(length=64), nullable=True),
        sa.Column("framework", sa.String(length=64), nullable=True),
        sa.Column("framework_version", sa.String(length=64), nullable=True),
        sa.Column("driver_version", sa.String(length=64), nullable=True),
        sa.Column(
            "last_seen",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("site", "host_name", "vendor", "model"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "worker_node_queue",
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("host_name", sa.String(length=128), nullable=False),
        sa.Column("panda_queue", sa.String(length=128), nullable=False),
        sa.Column(
            "last_seen",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("site", "host_name", "panda_queue"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("worker_node_queue", schema=None) as batch_op:
        batch_op.create_index("ix_worker_node_queue_queue", ["panda_queue", "last_seen"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatchDN", sa.String(length=250), nullable=True))
        batch_op.add_column(sa.Column("dispatchRole", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("dispatchNode", sa.String(length=128), nullable=True))

    with op.batch_alter_table("jobs_archive", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatchDN", sa.String(length=250), nullable=True))
        batch_op.add_column(sa.Column("dispatchRole", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("dispatchNode", sa.String(length=128), nullable=True))

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("splitRule", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("gshare", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("nucleus", sa.String(length=52), nullable=True))
        batch_op.add_column(sa.Column("cpuTime", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("jobCloning", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("useJumbo", sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column("numJumboJobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("numJumboJobsPerSite", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrades are not supported; restore a backup instead."""
    raise NotImplementedError("pandawms does not downgrade schemas")
