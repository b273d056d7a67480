"""Declared parameters of API methods, and their checking.

Each method lists its parameters with a kind; a request's values are checked (and, for query
strings, converted) against that list, so every handler receives clean Python values and every
client mistake gets a message naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pandawms.api.multipart import UploadedFile
from pandawms.model.errors import PandaError
from pandawms.model.values import BadValue, finite_number, whole_number


def _loads(text: str) -> Any:
    """Decode JSON text held in a parameter.

    orjson, not :mod:`json`: it refuses nesting deeper than 1024 with a ``ValueError`` where
    ``json.loads`` would exhaust the interpreter's recursion limit and fail the request with a 500.
    """
    return orjson.loads(text)


ParamKind = Literal[
    "int", "str", "bool", "float", "int_list", "str_list", "dict", "list", "json", "any", "file", "extra"
]
REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter: kind, default (REQUIRED when none) and the largest list it may be."""

    kind: ParamKind
    default: Any = REQUIRED
    max_items: int = 10000


def _bad(name: str, what: str, value: Any) -> PandaError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return PandaError(f"Argument error: {name} must be {what}, got {shown}")


def _to_int(name: str, value: Any) -> int:
    """Every integer column is at most 64 bits: a larger value is the client's mistake (a 400),
    not a database error (SQLite's OverflowError, PostgreSQL's DataError)."""
    try:
        return whole_number(value)
    except BadValue:
        raise _bad(name, "an integer of at most 64 bits", value) from None


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise _bad(name, "true or false", value)


def convert(name: str, spec: Param, value: Any, from_text: bool) -> Any:
    """Check one value against its declared kind (``from_text``: it came from a query string)."""
    if value is None:
        if spec.default is REQUIRED:
            raise PandaError(f"Argument error: {name} must not be null")
        return None
    if from_text and value == "None" and spec.default is None:
        # panda-client puts unset optional arguments in query strings as the text "None".
        return None
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "file":
        if not isinstance(value, UploadedFile):
            raise PandaError(f"Argument error: {name} must be an uploaded file (multipart/form-data)")
        return value
    if kind == "int":
        return _to_int(name, value)
    if kind == "float":
        try:
            return finite_number(value)
        except BadValue:
            raise _bad(name, "a finite number", value) from None
    if kind == "bool":
        return _to_bool(name, value)
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _bad(name, "a string", value)
    if kind in ("int_list", "str_list", "list"):
        items = value
        if from_text and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = _loads(text)
                except ValueError:
                    raise _bad(name, "a list", value) from None
            else:
                items = [part for part in text.split(",") if part.strip()]
        if not isinstance(items, list):
            items = [items] if kind != "list" else items
        if not isinstance(items, list):
            raise _bad(name, "a list", value)
        if len(items) > spec.max_items:
            raise PandaError(
                f"Argument error: {name} has {len(items)} items, at most {spec.max_items} allowed", 413
            )
        if kind == "int_list":
            return [_to_int(name, item) for item in items]
        if kind == "str_list":
            return [convert(name, Param("str"), item, from_text) for item in items]
        return items
    if kind == "dict":
        if from_text and isinstance(value, str):
            try:
                value = _loads(value)
            except ValueError:
                raise _bad(name, "a JSON object", value) from None
        if not isinstance(value, dict):
            raise _bad(name, "an object", value)
        return value
    if kind == "json":
        # A value that is itself JSON: accept the text or the already-decoded structure.
        if isinstance(value, str):
            try:
                return _loads(value)
            except ValueError as exc:
                raise PandaError(f"Argument error: {name} is not valid JSON: {exc}") from None
        return value
    raise AssertionError(kind)


def bind(params: dict[str, Param], given: dict[str, Any], from_text: bool) -> dict[str, Any]:
    """Check ``given`` against the declaration; return keyword arguments for the handler.

    Runs for every v1 request, with up to fifty declared parameters (a pilot's update): the
    declaration is walked once and nothing is built for what the request does not bring.
    """
    unknown = [name for name in given if name not in params]
    if unknown:
        unknown.sort()
        if not any(spec.kind == "extra" for spec in params.values()):
            raise PandaError(f"Argument error: unexpected argument(s) {', '.join(unknown[:5])}")
    bound: dict[str, Any] = {}
    for name, spec in params.items():
        if spec.kind == "extra":
            # A method that takes any further arguments (the real server's ``**kwargs``).
            if len(unknown) > spec.max_items:
                raise PandaError(f"Argument error: more than {spec.max_items} arguments", 413)
            bound[name] = {key: given[key] for key in unknown}
        elif name in given:
            bound[name] = convert(name, spec, given[name], from_text)
        elif spec.default is REQUIRED:
            raise PandaError(f"Argument error: missing required argument {name}")
        else:
            bound[name] = spec.default
    return bound
