"""Turning wire values into typed attribute values, with errors that name the attribute.

The clients send ``"NULL"`` for unset attributes, numbers as numbers or strings, and datetimes
as ``{"_datetime_object": ...}`` or ISO strings; one function decides what each becomes.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from pandawms.model.errors import Invalid
from pandawms.model.jobspec import Attribute

NULL = "NULL"


class BadValue(Invalid, ValueError):
    """A value that does not fit its attribute; the message names both.

    Also a ValueError, so that parsers catching ValueError treat it as any unparsable value.
    """


def parse_datetime(value: Any) -> dt.datetime:
    """Accept the clients' datetime spellings; return a naive UTC datetime."""
    if isinstance(value, dt.datetime):
        return (
            value.replace(tzinfo=None)
            if value.tzinfo is None
            else value.astimezone(dt.UTC).replace(tzinfo=None)
        )
    if isinstance(value, dict):
        for key in ("_datetime_object", "__datetime__"):
            if key in value:
                return parse_datetime(value[key])
        raise BadValue("not a datetime object")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value < 1e11:
            raise BadValue(f"epoch seconds out of range: {value!r}")
        return dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_datetime(float(text))
        except (ValueError, BadValue):
            pass
        text = text.replace("T", " ")
        for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
            try:
                return dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
        try:
            return parse_datetime(dt.datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise BadValue(f"not a datetime: {value!r}")


_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Largest magnitude every backend's float column holds (MariaDB's FLOAT is single precision:
#: a larger number failed the insert there as a database error instead of being refused).
FLOAT_MAX = 3.4e38


def whole_number(value: Any, truncate: bool = False) -> int:
    """A request's integer (ID, count, limit) as every database column can hold it.

    Takes ints, integral floats and their text (``12``, ``12.0``, ``1e3``); refuses booleans,
    NaN and infinities, fractions (unless ``truncate``: pilots send some sizes as ``2000.5``),
    and anything beyond 64 bits, which SQLite's driver cannot even bind (an OverflowError, a
    500) and other databases refuse as an error.
    """
    if isinstance(value, bool):
        raise BadValue(f"not an integer: {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not (truncate or value.is_integer()):
            raise BadValue(f"not an integer: {value!r}")
        result = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise BadValue(f"not an integer: {text[:40]!r}") from None
            if not math.isfinite(as_float) or not (truncate or as_float.is_integer()):
                raise BadValue(f"not an integer: {text[:40]!r}") from None
            result = int(as_float)
    else:
        raise BadValue(f"not an integer: {type(value).__name__}")
    if not _INT_MIN <= result <= _INT_MAX:
        raise BadValue(f"out of the 64-bit integer range: {str(value)[:40]}")
    return result


def finite_number(value: Any) -> float:
    """A request's real number: finite and within what every backend's float column holds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue(f"not a number: {str(value)[:40]!r}")
    try:
        result = float(value)
    except (ValueError, OverflowError):
        raise BadValue(f"not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(result):
        raise BadValue(f"not a finite number: {str(value)[:40]!r}")
    if abs(result) > FLOAT_MAX:
        raise BadValue(f"out of range: {str(value)[:40]}")
    return result


def coerce(attr: Attribute, value: Any, truncate: bool = False) -> Any:
    """Return ``value`` as the Python type of ``attr`` (None when unset).

    ``truncate`` cuts over-long strings to the column length (pilot diagnostics); otherwise an
    over-long string is refused, so nothing is silently lost at submission.
    """
    if value is None or value == NULL:
        return None
    kind = attr.kind
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and math.isfinite(value):
            # The JSON decoder turns integers beyond 64 bits into floats: one of 2**53 or more
            # no longer holds the number that was sent, so it is refused rather than rounded.
            if abs(value) >= 2**53:
                raise BadValue(f"{attr.name} is out of range or not exact: {value!r}")
            result = int(value)
        elif isinstance(value, str) and value.strip() != "":
            try:
                result = int(value)
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise BadValue(f"{attr.name} must be an integer, got {value!r}") from None
                if not math.isfinite(as_float):
                    raise BadValue(f"{attr.name} must be an integer, got {value!r}") from None
                result = int(as_float)
        elif isinstance(value, str):
            return None
        else:
            raise BadValue(f"{attr.name} must be an integer, got {type(value).__name__}")
        if not _INT_MIN <= result <= _INT_MAX:
            raise BadValue(f"{attr.name} is out of range: {result}")
        return result
    if kind == "float":
        if isinstance(value, bool):
            raise BadValue(f"{attr.name} must be a number, got a boolean")
        try:
            result_f = float(value)
        except (TypeError, ValueError):
            raise BadValue(f"{attr.name} must be a number, got {value!r}") from None
        if not math.isfinite(result_f):
            raise BadValue(f"{attr.name} must be a finite number")
        if abs(result_f) > FLOAT_MAX:
            raise BadValue(f"{attr.name} is out of range: {value!r}")
        return result_f
    if kind == "datetime":
        try:
            return parse_datetime(value)
        except BadValue as exc:
            raise BadValue(f"{attr.name}: {exc}") from None
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        raise BadValue(f"{attr.name} must be a string, got {type(value).__name__}")
    if "\x00" in text:
        raise BadValue(f"{attr.name} contains a NUL character")
    if attr.length and len(text) > attr.length:
        if truncate:
            return text[: attr.length]
        raise BadValue(f"{attr.name} is longer than {attr.length} characters ({len(text)})")
    return text
