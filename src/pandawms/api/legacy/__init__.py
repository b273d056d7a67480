"""The legacy pilot API: ``/server/panda/<method>``.

Every released pilot (3.7 up to 3.11) still speaks this, with form-encoded or gzip-compressed
JSON bodies; panda-client and pbook use a few calls of it too. The files of calls are listed
here, and the tables the app serves are built from them and from nothing else.
"""

from __future__ import annotations

from pandawms.api.authz import Rule
from pandawms.api.legacy import pilot, user
from pandawms.api.legacy.registry import (
    AsyncLegacyHandler,
    LegacyCalls,
    LegacyHandler,
    Reply,
    build_tables,
)

#: Every file of legacy calls.
GROUPS: tuple[LegacyCalls, ...] = (pilot.calls, user.calls)

#: Handlers run in a worker thread, by method name.
METHODS: dict[str, LegacyHandler]
#: Handlers run on the event loop (the hot pilot calls); they take these names first.
ASYNC_METHODS: dict[str, AsyncLegacyHandler]
#: The access rule of every method.
RULES: dict[str, Rule]
METHODS, ASYNC_METHODS, RULES = build_tables(GROUPS)

__all__ = ["ASYNC_METHODS", "GROUPS", "METHODS", "RULES", "AsyncLegacyHandler", "LegacyHandler", "Reply"]
