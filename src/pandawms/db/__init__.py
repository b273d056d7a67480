"""Database access: tables, engines per backend, schema version and migrations.

Every table module is imported here, explicitly, so the one metadata holds every table whatever
module a caller imports first (``db init`` creates them all on every backend).
"""

from pandawms.db import (
    schema,
    schema_async,
    schema_carousel,
    schema_ddm,
    schema_events,
    schema_meta,
    schema_monitor,
    schema_nodes,
    schema_tasks,
    schema_user,
    schema_workers,
)

TABLE_MODULES = (
    schema,
    schema_carousel,
    schema_async,
    schema_ddm,
    schema_events,
    schema_meta,
    schema_monitor,
    schema_nodes,
    schema_tasks,
    schema_user,
    schema_workers,
)
