"""The legacy method registry: what ``/server/panda/<method>`` may call, and how.

Each file of calls (:mod:`pandawms.api.legacy.pilot`, :mod:`pandawms.api.legacy.user`) owns a
:class:`LegacyCalls` and declares its methods on it; :func:`build_tables` joins the files that
:mod:`pandawms.api.legacy` lists into the tables the app serves. Nothing registers itself in a
global on import, so the calls files depend on this registry only, never on each other.

Replies are PanDA's flat dictionaries with a ``StatusCode``, JSON when the client accepts it
and url-encoded otherwise (:mod:`pandawms.api.app` does the encoding).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pandawms.api.authz import Rule
from pandawms.api.context import RequestContext
from pandawms.model.errors import PandaError


@dataclass(frozen=True)
class Reply:
    """A legacy reply: a dict rendered per Accept, or fixed text/JSON for the methods that demand it."""

    body: dict[str, Any] | list[Any] | str
    #: "negotiate" (JSON if accepted, else url-encoded), "json" or "text" or "urlencoded".
    form: str = "negotiate"


LegacyHandler = Callable[[RequestContext, dict[str, Any]], Reply]
AsyncLegacyHandler = Callable[[RequestContext, dict[str, Any]], Awaitable[Reply]]


#: Methods whose free text (pilot logs, reports, diagnostics) may hold NUL characters: the
#: update parser keeps such text with the NULs replaced, as a final report must not be lost.
_FREE_TEXT_METHODS = frozenset({"updateJob", "updateJobsInBulk"})


def _refuse_nul(params: dict[str, Any]) -> None:
    """A NUL in a name or label is a refusal, not a database error.

    PostgreSQL cannot hold NUL in text, even as a query parameter: a ``siteName`` with one made
    getJob fail with a 503 "database error" there while other backends answered normally.
    """
    for key, value in params.items():
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and "\x00" in item for item in items):
            raise PandaError(f"{str(key)[:40]} contains a NUL character")


class LegacyCalls:
    """The legacy methods one file declares, each with its access rule."""

    def __init__(self) -> None:
        #: Who may call each method (:mod:`pandawms.api.authz`).
        self.rules: dict[str, Rule] = {}
        #: Handlers run in a worker thread.
        self.methods: dict[str, LegacyHandler] = {}
        #: Handlers run on the event loop (the hot pilot calls).
        self.async_methods: dict[str, AsyncLegacyHandler] = {}

    def _declare(self, name: str, rule: Rule) -> None:
        if name in self.methods or name in self.async_methods:
            raise ValueError(f"legacy method {name} declared twice")
        self.rules[name] = rule

    def method(self, name: str, rule: Rule) -> Callable[[LegacyHandler], LegacyHandler]:
        """Declare ``/server/panda/<name>`` under ``rule``, run in a worker thread."""

        def register(func: LegacyHandler) -> LegacyHandler:
            self._declare(name, rule)
            if name in _FREE_TEXT_METHODS:
                self.methods[name] = func
                return func

            @functools.wraps(func)
            def checked(ctx: RequestContext, params: dict[str, Any]) -> Reply:
                _refuse_nul(params)
                return func(ctx, params)

            self.methods[name] = checked
            return checked

        return register

    def async_method(self, name: str, rule: Rule) -> Callable[[AsyncLegacyHandler], AsyncLegacyHandler]:
        """Declare ``/server/panda/<name>`` under ``rule``, run on the event loop (same checks as
        :meth:`method`)."""

        def register(func: AsyncLegacyHandler) -> AsyncLegacyHandler:
            self._declare(name, rule)
            if name in _FREE_TEXT_METHODS:
                self.async_methods[name] = func
                return func

            @functools.wraps(func)
            async def checked(ctx: RequestContext, params: dict[str, Any]) -> Reply:
                _refuse_nul(params)
                return await func(ctx, params)

            self.async_methods[name] = checked
            return checked

        return register


def build_tables(
    groups: Iterable[LegacyCalls],
) -> tuple[dict[str, LegacyHandler], dict[str, AsyncLegacyHandler], dict[str, Rule]]:
    """The thread and event-loop tables of ``groups`` and their rules; a name given twice is an error."""
    methods: dict[str, LegacyHandler] = {}
    async_methods: dict[str, AsyncLegacyHandler] = {}
    rules: dict[str, Rule] = {}
    for group in groups:
        for name in [*group.methods, *group.async_methods]:
            if name in methods or name in async_methods:
                raise ValueError(f"legacy method {name} declared twice")
        methods.update(group.methods)
        async_methods.update(group.async_methods)
        rules.update(group.rules)
    return methods, async_methods, rules
