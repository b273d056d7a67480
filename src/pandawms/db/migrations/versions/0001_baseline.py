"""Baseline: the schema as ``pandawms db init`` creates it (schema version 1).

Revision ID: 0001
Revises:
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: version 1 databases are created whole by ``pandawms db init``."""


def downgrade() -> None:
    """Downgrades are not supported; restore a backup instead."""
    raise NotImplementedError("pandawms does not downgrade schemas")
