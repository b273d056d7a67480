"""Database access: tables, engines per backend, schema version and migrations."""

# The task, monitor and user tables live in their own modules; importing them here makes them part of
# the one metadata whatever module is imported first, so ``db init`` creates them on every backend.
from pandawms.db import schema_meta as _schema_meta  # noqa: E402, F401
from pandawms.db import schema_monitor as _schema_monitor  # noqa: E402, F401
from pandawms.db import schema_nodes as _schema_nodes  # noqa: E402, F401
from pandawms.db import schema_tasks as _schema_tasks  # noqa: E402, F401
from pandawms.db import schema_user as _schema_user  # noqa: E402, F401
