"""A request's headers, read through a dictionary made once per request.

Starlette's :class:`~starlette.datastructures.Headers` scans the raw header list, encoding the
name and decoding each candidate, on every lookup, and ``get`` of an absent header raises and
catches a ``KeyError``. A v1 request looks up a dozen headers (identity, body type, cross-site
checks), which cost some 4 % of a worker's Python time under a heartbeat load (py-spy,
benchmarks/README.md). Names arrive lower-cased (ASGI); the first of repeated headers wins,
as in Starlette.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import Headers


class RequestHeaders(Headers):
    """Starlette's headers with dictionary lookups (``getlist``, ``raw``, ``items`` unchanged)."""

    __slots__ = ("_first",)

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        super().__init__(scope=scope)
        first: dict[str, str] = {}
        for name, value in self._list:
            key = name.decode("latin-1").lower()
            if key not in first:
                first[key] = value.decode("latin-1")
        self._first = first

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._first.get(key.lower(), default)

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._first
