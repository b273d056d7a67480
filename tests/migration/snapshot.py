"""Snapshots of the schema's shape (tables, columns, indexes) per schema version.

``python -m tests.migration.snapshot`` writes ``schema_v<CODE_SCHEMA_VERSION>.json`` from the
current table definitions; commit it with the migration that made the change.
"""

from __future__ import annotations

import json
from pathlib import Path

from pandawms.db import schema

HERE = Path(__file__).parent


def snapshot() -> dict[str, dict[str, list[str]]]:
    """Table name -> sorted column and index names, as the metadata defines them."""
    return {
        table.name: {
            "columns": sorted(column.name for column in table.columns),
            "indexes": sorted(str(index.name) for index in table.indexes),
        }
        for table in sorted(schema.metadata.sorted_tables, key=lambda t: t.name)
    }


def main() -> None:
    path = HERE / f"schema_v{schema.CODE_SCHEMA_VERSION}.json"
    path.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
