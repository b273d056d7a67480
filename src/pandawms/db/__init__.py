"""Database access: tables, engines per backend, schema version and migrations."""
