"""What Harvester instances report for operators: service metrics and dialog messages.

Neither changes any job or worker; they are kept as sent (checked for shape and size) so that an
operator can see an instance's health and complaints next to its workers.
"""

from __future__ import annotations

from typing import Any

import orjson

from pandawms.core.links import check_harvester_id, clean_text
from pandawms.core.runtime import Runtime
from pandawms.db.engine import write_tx
from pandawms.db.schema_workers import harvester_dialogs as dialogs
from pandawms.db.schema_workers import harvester_metrics as metrics
from pandawms.model.errors import PandaError
from pandawms.model.values import BadValue, parse_datetime

MAX_ITEMS = 1000
MAX_METRICS_TEXT = 256 * 1024


def _time(where: str, value: Any) -> Any:
    try:
        return parse_datetime(value)
    except BadValue as exc:
        raise PandaError(f"Argument error: {where} is not a time ({exc})") from None


def add_metrics(rt: Runtime, harvester_id: str, items: Any) -> int:
    """Store ``[[creationTime, hostName, metrics], ...]``; returns how many."""
    check_harvester_id(harvester_id)
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise PandaError(f"Argument error: metrics must be a list of at most {MAX_ITEMS} triplets")
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, list) or len(item) != 3:
            raise PandaError(f"Argument error: metrics[{index}] must be [creationTime, hostName, metrics]")
        created, host, payload = item
        if host is not None and not isinstance(host, str):
            raise PandaError(f"Argument error: metrics[{index}] host name must be a string")
        text = clean_text(payload if isinstance(payload, str) else orjson.dumps(payload).decode())
        if len(text) > MAX_METRICS_TEXT:
            raise PandaError(f"Argument error: metrics[{index}] is larger than {MAX_METRICS_TEXT} bytes", 413)
        rows.append(
            {
                "harvesterID": harvester_id,
                "hostName": clean_text(host or "")[:128] or None,
                "creationTime": _time(f"metrics[{index}] creationTime", created),
                "metrics": text,
            }
        )
    if rows:
        with write_tx(rt.engine) as conn:
            conn.execute(metrics.insert(), rows)
    return len(rows)


def add_dialogs(rt: Runtime, harvester_id: str, items: Any) -> int:
    """Store dialog messages (``DiagSpec.convert_to_propagate``), replacing a resent diagID."""
    check_harvester_id(harvester_id)
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise PandaError(f"Argument error: dialogs must be a list of at most {MAX_ITEMS} messages")
    rows: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PandaError(f"Argument error: dialogs[{index}] must be an object")
        diag_id = item.get("diagID")
        if isinstance(diag_id, bool) or not isinstance(diag_id, int) or not 0 <= diag_id < 2**63:
            raise PandaError(f"Argument error: dialogs[{index}].diagID must be a non-negative integer")
        row: dict[str, Any] = {"harvesterID": harvester_id, "diagID": diag_id}
        for name, limit in (
            ("moduleName", 100),
            ("identifier", 100),
            ("messageLevel", 10),
            ("diagMessage", 500),
        ):
            value = item.get(name)
            if value is not None and not isinstance(value, str | int | float):
                raise PandaError(f"Argument error: dialogs[{index}].{name} must be a string")
            row[name] = None if value is None else clean_text(str(value))[:limit]
        created = item.get("creationTime")
        row["creationTime"] = (
            None if created in (None, "") else _time(f"dialogs[{index}].creationTime", created)
        )
        rows[diag_id] = row
    if rows:
        with write_tx(rt.engine) as conn:
            conn.execute(
                dialogs.delete().where(
                    dialogs.c.harvesterID == harvester_id, dialogs.c.diagID.in_(sorted(rows))
                )
            )
            conn.execute(dialogs.insert(), list(rows.values()))
    return len(rows)
