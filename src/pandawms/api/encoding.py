"""Bytes on the wire: JSON the PanDA clients decode, and PanDA's url-encoded replies."""

from __future__ import annotations

import datetime as dt
import decimal
import urllib.parse
from typing import Any

import orjson

_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _special(obj: Any) -> Any:
    # panda-client turns {"__datetime__": iso} back into a datetime (Client.decode_special_cases).
    if isinstance(obj, dt.datetime | dt.date):
        return {"__datetime__": obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def dumps_v1(obj: Any) -> bytes:
    """JSON with datetimes as ``{"__datetime__": iso}``, as the v1 clients expect."""
    return orjson.dumps(obj, default=_special, option=_OPTS)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return obj.strftime("%Y-%m-%d %H:%M:%S")
    return _special(obj)


def dumps_plain(obj: Any) -> bytes:
    """JSON with datetimes as ``YYYY-mm-dd HH:MM:SS`` strings (legacy pilot replies)."""
    return orjson.dumps(obj, default=_plain, option=_OPTS)


def urlencode_reply(reply: dict[str, Any]) -> bytes:
    """PanDA's url-encoded reply: scalars as text, nested values as JSON text."""
    pairs = []
    for key, value in reply.items():
        if isinstance(value, dict | list | tuple):
            text = dumps_plain(value).decode()
        elif isinstance(value, dt.datetime):
            text = value.strftime("%Y-%m-%d %H:%M:%S")
        elif value is None:
            text = "NULL"
        else:
            text = str(value)
        pairs.append((key, text))
    return urllib.parse.urlencode(pairs).encode()
