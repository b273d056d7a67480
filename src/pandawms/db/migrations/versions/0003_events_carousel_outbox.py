"""Schema version 3: event ranges, the data carousel, the DDM outbox, asynchronous requests,
Harvester target slots, job-clone semaphores and users' stored requests.

Only new tables: the event service's ranges (``event_ranges``), staging requests from tape and
the tasks waiting on them (``data_carousel_requests``, ``data_carousel_relations``), the outbox
of data-management operations (``ddm_outbox``), requests to every server machine and their
results (``async_requests``, ``async_results``, ``machine_heartbeat``), target slots per queue
(``harvester_slots``), one semaphore per cloned job set (``job_clone_semaphores``) and stored
workflow and event-picking requests (``user_requests``). No existing table changes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the version 3 tables."""
    op.create_table(
        "async_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("request_type", sa.String(length=32), nullable=False),
        sa.Column("service_name", sa.String(length=64), nullable=True),
        sa.Column("machine_name", sa.String(length=255), nullable=True),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("expected_machines", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("request_id"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("async_requests", schema=None) as batch_op:
        batch_op.create_index("ix_async_requests_created", ["created_at"], unique=False)

    op.create_table(
        "async_results",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("machine_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "result",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.Column("error_msg", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "finished_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "stderr",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("return_code", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "machine_name"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("async_results", schema=None) as batch_op:
        batch_op.create_index("ix_async_results_machine", ["machine_name", "status"], unique=False)

    op.create_table(
        "data_carousel_relations",
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "task_id"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("data_carousel_relations", schema=None) as batch_op:
        batch_op.create_index("ix_dc_relations_task", ["task_id"], unique=False)

    op.create_table(
        "data_carousel_requests",
        sa.Column(
            "request_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dataset", sa.String(length=256), nullable=False),
        sa.Column("source_rse", sa.String(length=64), nullable=True),
        sa.Column("destination_rse", sa.String(length=64), nullable=True),
        sa.Column("ddm_rule_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total_files", sa.BigInteger(), nullable=True),
        sa.Column("staged_files", sa.BigInteger(), nullable=True),
        sa.Column("dataset_size", sa.BigInteger(), nullable=True),
        sa.Column("staged_size", sa.BigInteger(), nullable=True),
        sa.Column(
            "creation_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "start_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "end_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "modification_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "check_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column("source_tape", sa.String(length=64), nullable=True),
        sa.Column(
            "parameters",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "last_staged_time",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("request_id"),
        mysql_engine="InnoDB",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("data_carousel_requests", schema=None) as batch_op:
        batch_op.create_index("ix_dc_requests_dataset_status", ["dataset", "status"], unique=False)
        batch_op.create_index("ix_dc_requests_status", ["status"], unique=False)

    op.create_table(
        "ddm_outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("jediTaskID", sa.BigInteger(), nullable=True),
        sa.Column("PandaID", sa.BigInteger(), nullable=True),
        sa.Column(
            "payload",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "nextAttempt",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column("lastError", sa.String(length=500), nullable=True),
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
        sa.PrimaryKeyConstraint("id"),
        mysql_engine="InnoDB",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("ddm_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_ddm_outbox_due", ["status", "nextAttempt"], unique=False)
        batch_op.create_index("ix_ddm_outbox_pandaid", ["PandaID"], unique=False)
        batch_op.create_index("ix_ddm_outbox_task", ["jediTaskID"], unique=False)

    op.create_table(
        "event_ranges",
        sa.Column(
            "rangeID",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("jediTaskID", sa.BigInteger(), nullable=False),
        sa.Column("jobsetID", sa.BigInteger(), nullable=False),
        sa.Column("PandaID", sa.BigInteger(), nullable=True),
        sa.Column("datasetID", sa.BigInteger(), nullable=True),
        sa.Column("fileID", sa.BigInteger(), nullable=False),
        sa.Column("lfn", sa.String(length=1000), nullable=False),
        sa.Column("GUID", sa.String(length=64), nullable=True),
        sa.Column("scope", sa.String(length=30), nullable=True),
        sa.Column("job_processID", sa.Integer(), nullable=False),
        sa.Column("startEvent", sa.BigInteger(), nullable=False),
        sa.Column("lastEvent", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attemptNr", sa.Integer(), nullable=False),
        sa.Column("failedAttempt", sa.Integer(), nullable=False),
        sa.Column("maxAttempt", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=250), nullable=True),
        sa.Column("claimToken", sa.String(length=36), nullable=True),
        sa.Column("objstoreID", sa.String(length=64), nullable=True),
        sa.Column("pathConvention", sa.Integer(), nullable=True),
        sa.Column("zipLFN", sa.String(length=255), nullable=True),
        sa.Column("coreCount", sa.Integer(), nullable=True),
        sa.Column("cpuConsumptionTime", sa.Float(), nullable=True),
        sa.Column("errorCode", sa.Integer(), nullable=True),
        sa.Column("errorDiag", sa.String(length=500), nullable=True),
        sa.Column(
            "creationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "dispatchTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("rangeID"),
        sa.UniqueConstraint("jediTaskID", "fileID", "job_processID", name="uq_event_ranges_position"),
        mysql_engine="InnoDB",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("event_ranges", schema=None) as batch_op:
        batch_op.create_index("ix_event_ranges_claim", ["claimToken"], unique=False)
        batch_op.create_index("ix_event_ranges_pandaid", ["PandaID"], unique=False)
        batch_op.create_index("ix_event_ranges_pool", ["jobsetID", "status", "rangeID"], unique=False)

    op.create_table(
        "harvester_slots",
        sa.Column("pandaQueueName", sa.String(length=128), nullable=False),
        sa.Column("gshare", sa.String(length=32), nullable=False),
        sa.Column("resourceType", sa.String(length=56), nullable=False),
        sa.Column("numSlots", sa.Integer(), nullable=False),
        sa.Column(
            "modificationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "expirationTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("pandaQueueName", "gshare", "resourceType"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "job_clone_semaphores",
        sa.Column("jediTaskID", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("jobsetID", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("PandaID", sa.BigInteger(), nullable=False),
        sa.Column(
            "lockTime",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("jediTaskID", "jobsetID"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "machine_heartbeat",
        sa.Column("machine_name", sa.String(length=255), nullable=False),
        sa.Column("service_name", sa.String(length=64), nullable=False),
        sa.Column(
            "last_seen",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("machine_name"),
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("machine_heartbeat", schema=None) as batch_op:
        batch_op.create_index("ix_machine_heartbeat_service", ["service_name", "last_seen"], unique=False)

    op.create_table(
        "user_requests",
        sa.Column(
            "requestID",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("userName", sa.String(length=128), nullable=False),
        sa.Column("dn", sa.String(length=250), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "payload",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
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
    with op.batch_alter_table("user_requests", schema=None) as batch_op:
        batch_op.create_index("ix_user_requests_kind_status", ["kind", "status"], unique=False)
        batch_op.create_index("ix_user_requests_user", ["userName", "status"], unique=False)
