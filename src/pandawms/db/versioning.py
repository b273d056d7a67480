"""Creating, upgrading and checking the schema.

A new database is created whole from the table definitions and stamped with the newest
migration; an existing one is brought forward by Alembic migrations only. Either way the
``schema_version`` row records the version, and :func:`check_schema` compares it with the code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, select

from pandawms.db import schema
from pandawms.db.engine import write_tx

_MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def database_version(engine: Engine) -> int | None:
    """The schema version recorded in the database, or None for an empty database."""
    if not inspect(engine).has_table("schema_version"):
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(schema.schema_version.c.version).where(
                schema.schema_version.c.component == schema.SCHEMA_COMPONENT
            )
        ).first()
    return None if row is None else int(row[0])


def _record_version(engine: Engine, version: int) -> None:
    table = schema.schema_version
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with write_tx(engine) as conn:
        updated = conn.execute(
            table.update()
            .where(table.c.component == schema.SCHEMA_COMPONENT)
            .values(version=version, updated=now)
        ).rowcount
        if not updated:
            conn.execute(
                table.insert().values(component=schema.SCHEMA_COMPONENT, version=version, updated=now)
            )


def init_schema(engine: Engine) -> str:
    """Create every table in an empty database; leave an existing one alone. Says what it did."""
    current = database_version(engine)
    if current is not None:
        return f"database already initialised at schema version {current}"
    schema.metadata.create_all(engine)
    command.stamp(_alembic_config(engine), "head")
    _record_version(engine, schema.CODE_SCHEMA_VERSION)
    return f"created schema version {schema.CODE_SCHEMA_VERSION}"


def upgrade_schema(engine: Engine) -> str:
    """Apply every pending migration (or create the schema if the database is empty)."""
    current = database_version(engine)
    if current is None:
        return init_schema(engine)
    command.upgrade(_alembic_config(engine), "head")
    _record_version(engine, schema.CODE_SCHEMA_VERSION)
    return f"schema upgraded from version {current} to {schema.CODE_SCHEMA_VERSION}"


@dataclass(frozen=True)
class SchemaStatus:
    """Result of comparing the database schema with the code."""

    database: int | None
    code: int

    @property
    def ok(self) -> bool:
        """The database is at least as new as the code needs."""
        return self.database is not None and self.database >= self.code

    @property
    def line(self) -> str:
        """The one line operators read in ``systemctl status``."""
        if self.database is None:
            return f"DB schema check: FAILED, the database has no pandawms schema (code needs {self.code}); run 'pandawms db init'"
        if self.database < self.code:
            return (
                f"DB schema check: FAILED, database {self.database} is older than code {self.code}; "
                "run 'pandawms db upgrade'"
            )
        if self.database > self.code:
            return f"DB schema check: OK, database {self.database}, code {self.code} (database is newer than the code)"
        return f"DB schema check: OK, database {self.database}, code {self.code}"


def check_schema(engine: Engine) -> SchemaStatus:
    """Compare the database's schema version with :data:`schema.CODE_SCHEMA_VERSION`."""
    return SchemaStatus(database_version(engine), schema.CODE_SCHEMA_VERSION)
