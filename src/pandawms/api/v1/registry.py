"""The v1 method registry: what ``/api/v1/<module>/<method>`` may call, and how.

Each URL module (``api/v1/job.py``, ``api/v1/pilot.py``, ...) owns a :class:`V1Module` and
declares each method on it once, in its decorator and signature: the HTTP verb and the access
rule in the decorator, the parameters in the handler's signature (their names, kinds from the
type annotations, defaults from the defaults). Where a type cannot say it all (a list's largest
size, a value that is JSON text, a mutable default), an ``Annotated[..., Param(...)]`` carries
the rest. :func:`build_table` joins the modules that :mod:`pandawms.api.v1` lists into the one
table the app, the OpenAPI document and the access-rule test read. Nothing registers itself in a
global on import, so the table holds exactly the modules listed there, and a handler module
depends on this registry only, never on the package that assembles it.

The app checks the rule, the verb and the parameters before calling the handler, which returns
``(success, message, data)`` or raises PandaError. A handler written ``async def`` runs on the
event loop (the hot pilot calls, which wait on the worker's group commit instead of holding a
thread); a plain ``def`` runs in a worker thread.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pandawms.api.authz import NO_RULE, Rule
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import REQUIRED, Param, ParamKind

Result = tuple[bool, str, Any]
Handler = Callable[..., Result]
AsyncHandler = Callable[..., Awaitable[Result]]
#: What an audited method records as its targets, from its bound arguments and its answer's data
#: (a submission's targets are the IDs it created, known only from the answer).
Targets = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A registered v1 method."""

    module: str
    name: str
    verb: str
    params: dict[str, Param]
    handler: Handler | AsyncHandler
    #: Who may call it (:mod:`pandawms.api.authz`); :data:`NO_RULE` refuses everyone.
    rule: Rule = NO_RULE
    #: True for an ``async def`` handler: the app awaits it on the event loop, no thread.
    on_loop: bool = False
    #: True for submissions: they run in a lane of their own (``submit_lanes`` at once per
    #: worker), outside the request threads, so that users' big batches cannot take every thread
    #: and pooled connection while pilots wait (a 5,000-job batch takes seconds of CPU and one
    #: connection; it is one transaction, so it is not cut into pieces).
    submission: bool = False
    #: The audit record's targets; None records the bound arguments.
    targets: Targets | None = None


H = TypeVar("H", Handler, AsyncHandler)

_SCALARS: dict[Any, ParamKind] = {bool: "bool", int: "int", float: "float", str: "str"}


def _kind_of(hint: Any, where: str) -> ParamKind:
    """The parameter kind a type annotation means (``X | None`` as ``X``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _kind_of(inner[0], where) if len(inner) == 1 else "any"
    if hint is Any:
        return "any"
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint is UploadedFile:
        return "file"
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return {(int,): "int_list", (str,): "str_list"}.get(args, "list")  # type: ignore[return-value]
    if hint is dict or origin is dict:
        return "dict"
    raise TypeError(f"{where}: no parameter kind for the annotation {hint!r}; use Annotated[..., Param(...)]")


def params_of(func: Callable[..., Any], rest: Mapping[str, Param] | None = None) -> dict[str, Param]:
    """The parameters of a handler: every parameter of its signature after the request context.

    A handler that takes ``**kwargs`` (it passes a long argument list on as one dict, as the
    dispatch and the worker-node reports do) gets those from ``rest``, declared once in its
    decorator; any other handler must not be given ``rest``.
    """
    where = getattr(func, "__qualname__", repr(func))
    hints = typing.get_type_hints(func, include_extras=True)
    declared: dict[str, Param] = {}
    takes_rest = False
    for name, parameter in list(inspect.signature(func).parameters.items())[1:]:
        if parameter.kind is parameter.VAR_POSITIONAL:
            raise TypeError(f"{where}: *args are not v1 parameters")
        if parameter.kind is parameter.VAR_KEYWORD:
            takes_rest = True
            continue
        hint = hints.get(name, Any)
        given: Param | None = None
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            given = next((extra for extra in extras if isinstance(extra, Param)), None)
        has_default = parameter.default is not inspect.Parameter.empty
        if given is not None:
            if has_default and given.default is not REQUIRED:
                raise TypeError(f"{where}: {name} has a default in its signature and in its Param")
            default = parameter.default if has_default else given.default
            declared[name] = Param(given.kind, default, given.max_items)
        else:
            declared[name] = Param(
                _kind_of(hint, f"{where}({name})"), parameter.default if has_default else REQUIRED
            )
    if takes_rest != (rest is not None):
        raise TypeError(f"{where}: give params= exactly when the handler takes **kwargs")
    for name, spec in (rest or {}).items():
        if name in declared:
            raise TypeError(f"{where}: {name} declared in the signature and in params=")
        declared[name] = spec
    return declared


class V1Module:
    """The methods of one URL module, ``/api/v1/<name>/...``, as its file declares them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.methods: dict[str, Method] = {}

    def method(
        self,
        name: str,
        verb: str,
        rule: Rule,
        /,
        *,
        submission: bool = False,
        targets: Targets | None = None,
        params: Mapping[str, Param] | None = None,
    ) -> Callable[[H], H]:
        """Declare ``/api/v1/<module>/<name>`` for ``verb`` (GET, POST or ANY) under ``rule``.

        ``params`` declares what a ``**kwargs`` handler takes beyond its named parameters.
        """

        def register(func: H) -> H:
            if name in self.methods:
                raise ValueError(f"v1 method {self.name}/{name} declared twice")
            self.methods[name] = Method(
                self.name,
                name,
                verb,
                params_of(func, params),
                func,
                rule,
                on_loop=inspect.iscoroutinefunction(func),
                submission=submission,
                targets=targets,
            )
            return func

        return register

    def get(self, name: str, rule: Rule, /, **options: Any) -> Callable[[H], H]:
        """A method that only reads, called with GET."""
        return self.method(name, "GET", rule, **options)

    def post(self, name: str, rule: Rule, /, **options: Any) -> Callable[[H], H]:
        """A method called with POST."""
        return self.method(name, "POST", rule, **options)

    def get_or_post(self, name: str, rule: Rule, /, **options: Any) -> Callable[[H], H]:
        """A read that clients send either way (long ID lists come as POST)."""
        return self.method(name, "ANY", rule, **options)


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


def rules_of(table: Mapping[tuple[str, str], Method]) -> dict[tuple[str, str], Rule]:
    """The access rule of every method of ``table`` (for the operators' listing and the tests)."""
    return {key: method.rule for key, method in table.items()}


def ok(data: Any = None, message: str = "") -> Result:
    """A successful reply."""
    return True, message, data
