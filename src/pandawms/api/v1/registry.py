"""The v1 method registry: what ``/api/v1/<module>/<method>`` may call, and how.

Each URL module (``api/v1/job.py``, ``api/v1/pilot.py``, ...) owns a :class:`V1Module` and
declares its methods on it with their HTTP verb and parameters; :func:`build_table` joins the
modules that :mod:`pandawms.api.v1` lists into the one table the app serves. Nothing registers
itself in a global on import, so the table holds exactly the modules listed there, and a handler
module depends on this registry only, never on the package that assembles it.

The app checks the verb and the parameters before calling the handler, which returns
``(success, message, data)`` or raises PandaError. A handler written ``async def`` runs on the
event loop (the hot pilot calls, which wait on the worker's group commit instead of holding a
thread); a plain ``def`` runs in a worker thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pandawms.api.params import Param

Result = tuple[bool, str, Any]
Handler = Callable[..., Result]
AsyncHandler = Callable[..., Awaitable[Result]]


@dataclass(frozen=True)
class Method:
    """A registered v1 method."""

    module: str
    name: str
    verb: str
    params: dict[str, Param]
    handler: Handler | AsyncHandler
    #: True for an ``async def`` handler: the app awaits it on the event loop, no thread.
    on_loop: bool = False


H = TypeVar("H", Handler, AsyncHandler)


class V1Module:
    """The methods of one URL module, ``/api/v1/<name>/...``, as its file declares them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.methods: dict[str, Method] = {}

    def method(self, name: str, verb: str, /, **params: Param) -> Callable[[H], H]:
        """Declare ``/api/v1/<module>/<name>`` for ``verb`` (GET, POST or ANY)."""

        def register(func: H) -> H:
            if name in self.methods:
                raise ValueError(f"v1 method {self.name}/{name} declared twice")
            on_loop = inspect.iscoroutinefunction(func)
            self.methods[name] = Method(self.name, name, verb, params, func, on_loop)
            return func

        return register

    def get(self, name: str, /, **params: Param) -> Callable[[H], H]:
        """A method that only reads, called with GET."""
        return self.method(name, "GET", **params)

    def post(self, name: str, /, **params: Param) -> Callable[[H], H]:
        """A method called with POST."""
        return self.method(name, "POST", **params)

    def get_or_post(self, name: str, /, **params: Param) -> Callable[[H], H]:
        """A read that clients send either way (long ID lists come as POST)."""
        return self.method(name, "ANY", **params)


def build_table(modules: Iterable[V1Module]) -> dict[tuple[str, str], Method]:
    """Every method of ``modules`` by ``(module, method)``; a name given twice is an error."""
    table: dict[tuple[str, str], Method] = {}
    for module in modules:
        for name, method in module.methods.items():
            key = (module.name, name)
            if key in table:
                raise ValueError(f"v1 method {module.name}/{name} declared twice")
            table[key] = method
    return table


def ok(data: Any = None, message: str = "") -> Result:
    """A successful reply."""
    return True, message, data
