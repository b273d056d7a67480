"""Migrations reproduce the table definitions, on every backend.

A new database is created whole from the metadata (``pandawms db init``); an existing one only
moves forward through Alembic migrations (``pandawms db upgrade``). The two must end in the same
schema, or a node upgraded in place would differ from a freshly installed one. Two checks keep
them together:

* each released schema version has a snapshot (``schema_v<N>.json``: tables, their columns and
  indexes), and the metadata must equal the snapshot of ``CODE_SCHEMA_VERSION``. Changing a table
  without bumping the version and writing a migration fails here first;
* for each older snapshot, a database of that version is built (the current tables cut down to
  that snapshot), upgraded, and compared with the metadata by Alembic's own comparison.

Regenerate the newest snapshot after a deliberate change with
``python -m tests.migration.snapshot``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url

from pandawms.db import schema
from pandawms.db.versioning import (
    _alembic_config,
    _record_version,
    check_schema,
    upgrade_schema,
)
from tests.dbs import BACKENDS
from tests.migration.snapshot import HERE, snapshot

ALL_BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _snapshot_file(version: int) -> Path:
    return HERE / f"schema_v{version}.json"


def _old_versions() -> list[int]:
    return [v for v in range(1, schema.CODE_SCHEMA_VERSION) if _snapshot_file(v).exists()]


def test_metadata_matches_the_snapshot_of_the_code_version() -> None:
    path = _snapshot_file(schema.CODE_SCHEMA_VERSION)
    assert path.exists(), f"no snapshot for schema version {schema.CODE_SCHEMA_VERSION}: write {path.name}"
    recorded = json.loads(path.read_text())
    current = snapshot()
    assert current == recorded, (
        "the tables differ from the snapshot of this schema version: bump CODE_SCHEMA_VERSION, "
        "write a migration, and regenerate the snapshot (python -m tests.migration.snapshot)"
    )


def test_every_version_has_a_migration() -> None:
    versions = sorted(
        p.stem for p in (Path(schema.__file__).parent / "migrations" / "versions").glob("0*.py")
    )
    assert versions == [f"{v:04d}_" + versions[v - 1].split("_", 1)[1] for v in range(1, len(versions) + 1)]
    assert len(versions) == schema.CODE_SCHEMA_VERSION


@pytest.fixture(params=ALL_BACKENDS)
def scratch_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own (the migration test drops and alters tables)."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'migrate.sqlite'}")
        yield engine
        engine.dispose()
        return
    backend = BACKENDS[request.param]
    session_url = backend.require()
    name = f"{make_url(session_url).database}_mig"
    admin = create_engine(backend.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_engine(make_url(session_url).set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def _cut_down_to(engine: Engine, old: dict[str, dict[str, list[str]]]) -> None:
    """Make the current schema look like an older one: drop what that version did not have."""
    with engine.begin() as conn:
        ops = Operations(MigrationContext.configure(conn))
        for table in reversed(schema.metadata.sorted_tables):
            if table.name not in old:
                table.drop(conn)
        live = inspect(conn)
        for table in schema.metadata.sorted_tables:
            if table.name not in old:
                continue
            keep = old[table.name]
            for index in live.get_indexes(table.name):
                if index["name"] and index["name"] not in keep["indexes"]:
                    ops.drop_index(index["name"], table_name=table.name)
            extra = [c["name"] for c in live.get_columns(table.name) if c["name"] not in keep["columns"]]
            if extra:
                with ops.batch_alter_table(table.name) as batch:
                    for column in extra:
                        batch.drop_column(column)


@pytest.mark.parametrize("version", _old_versions() or [pytest.param(0, marks=pytest.mark.skip)])
def test_upgrade_from_an_old_version_gives_the_metadata(scratch_engine: Engine, version: int) -> None:
    old = json.loads(_snapshot_file(version).read_text())
    schema.metadata.create_all(scratch_engine)
    _cut_down_to(scratch_engine, old)
    command.stamp(_alembic_config(scratch_engine), f"{version:04d}")
    _record_version(scratch_engine, version)
    assert not check_schema(scratch_engine).ok

    upgrade_schema(scratch_engine)

    assert check_schema(scratch_engine).ok
    with scratch_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, schema.metadata)
    assert differences == []


def test_a_fresh_database_equals_the_metadata(scratch_engine: Engine) -> None:
    upgrade_schema(scratch_engine)  # an empty database is created whole
    assert check_schema(scratch_engine).ok
    with scratch_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, schema.metadata) == []
