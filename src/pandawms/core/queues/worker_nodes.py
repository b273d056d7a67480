"""The worker-node map: what hardware pilots report from the nodes they start on.

An ATLAS pilot posts its node's CPU description (``pilot/update_worker_node``) and, when it
sees GPUs, their description (``pilot/update_worker_node_gpu``) before it asks for its first
job; a refused call costs it minutes of sleep, so both are cheap upserts. Keys follow the real
server: a node is (site, host, CPU model), its GPUs (site, host, vendor, model); the host name
loses a batch-slot prefix (``slot1@wn.example.org`` -> ``wn.example.org``) so every slot of a
node lands on one row. Text is cut to the column sizes; a number out of range is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, and_, select
from sqlalchemy.exc import IntegrityError

from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_nodes import worker_node, worker_node_gpus, worker_node_queue
from pandawms.model.errors import PandaError

#: Largest count/size a report may carry (logical CPUs, MB of memory, GB of disk, MB of VRAM).
_MAX_NUMBER = 10**12


def clean_host_name(host_name: str) -> str:
    """The node's own name: a ``slot@`` prefix (one per batch slot) is dropped."""
    _, at, rest = host_name.partition("@")
    return rest if at and rest else host_name


def normalize_cpu_model(cpu_model: str) -> str:
    """A CPU model without clock, cache size and marketing words, to group equal CPUs."""
    text = cpu_model.upper()
    text = re.sub(r"@\s*\d+(\.\d+)?\s*GHZ", "", text)
    text = re.sub(r"\d+\s*KB", "", text)
    text = re.sub(r"CORE PROCESSOR\s*\([^)]*\)", "", text)
    text = re.sub(r"\b\d+-CORE\b", "", text)
    text = re.sub(r"CPU|CORE|PROCESSOR|SCALABLE|\(R\)|\(TM\)", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _text(table: Table, name: str, value: Any, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise PandaError(f"Argument error: {name} is required")
        return None
    if not isinstance(value, str):
        value = str(value)
    return value.strip()[: table.c[name].type.length]  # type: ignore[attr-defined]


def _required(table: Table, name: str, value: Any) -> str:
    text = _text(table, name, value, required=True)
    assert text is not None  # _text raised otherwise
    return text


def _number(name: str, value: Any, kind: type = int) -> Any:
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise PandaError(f"Argument error: {name} must be a number, got {str(value)[:40]!r}") from None
    if isinstance(value, bool) or not (0 <= number <= _MAX_NUMBER):
        raise PandaError(f"Argument error: {name} out of range: {str(value)[:40]}")
    return number


def _upsert(
    conn: Connection,
    table: Table,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    on_insert: Mapping[str, Any] | None = None,
) -> bool:
    """Update the row with ``key`` or insert it (with ``on_insert`` too); True when it was new.

    A concurrent insert of the same node (two pilots of one node starting together) loses the
    race with an IntegrityError inside a savepoint and becomes an update.
    """
    where = and_(*[table.c[k] == v for k, v in key.items()])
    if conn.execute(table.update().where(where).values(**values)).rowcount:
        return False
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**key, **values, **(on_insert or {})))
        return True
    except IntegrityError:
        conn.execute(table.update().where(where).values(**values))
        return False


def update_worker_node(rt: Runtime, report: Mapping[str, Any], now: dt.datetime | None = None) -> str:
    """Store one node's CPU description (and its queue link); the message says what happened."""
    now = now or utcnow()
    t = worker_node
    site = _required(t, "site", report.get("site"))
    host = _required(t, "host_name", clean_host_name(str(report.get("host_name") or "")))
    cpu_model = _required(t, "cpu_model", report.get("cpu_model"))
    values = {
        "cpu_model_normalized": _text(t, "cpu_model_normalized", normalize_cpu_model(cpu_model)),
        "n_logical_cpus": _number("n_logical_cpus", report.get("n_logical_cpus")),
        "n_sockets": _number("n_sockets", report.get("n_sockets")),
        "cores_per_socket": _number("cores_per_socket", report.get("cores_per_socket")),
        "threads_per_core": _number("threads_per_core", report.get("threads_per_core")),
        "cpu_architecture": _text(t, "cpu_architecture", report.get("cpu_architecture")),
        "cpu_architecture_level": _text(t, "cpu_architecture_level", report.get("cpu_architecture_level")),
        "clock_speed": _number("clock_speed", report.get("clock_speed"), float),
        "total_memory": _number("total_memory", report.get("total_memory")),
        "total_local_disk": _number("total_local_disk", report.get("total_local_disk")),
        "last_seen": now,
    }
    queue = _text(worker_node_queue, "panda_queue", report.get("panda_queue"))
    with write_tx(rt.engine) as conn:
        key = {"site": site, "host_name": host, "cpu_model": cpu_model}
        new = _upsert(conn, t, key, values, on_insert={"first_seen": now})
        if queue:
            _upsert(
                conn,
                worker_node_queue,
                {"site": site, "host_name": host, "panda_queue": queue},
                {"last_seen": now},
            )
    return "Inserted new worker node." if new else "Updated existing worker node."


def update_worker_node_gpu(rt: Runtime, report: Mapping[str, Any], now: dt.datetime | None = None) -> str:
    """Store one kind of GPU of a node (vendor, model, how many, memory, driver)."""
    now = now or utcnow()
    t = worker_node_gpus
    site = _required(t, "site", report.get("site"))
    host = _required(t, "host_name", clean_host_name(str(report.get("host_name") or "")))
    vendor = _required(t, "vendor", report.get("vendor"))
    model = _required(t, "model", report.get("model"))
    count = _number("count", report.get("count"))
    if count is None:
        raise PandaError("Argument error: count is required")
    values = {
        "count": count,
        "vram": _number("vram", report.get("vram")),
        "architecture": _text(t, "architecture", report.get("architecture")),
        "framework": _text(t, "framework", report.get("framework")),
        "framework_version": _text(t, "framework_version", report.get("framework_version")),
        "driver_version": _text(t, "driver_version", report.get("driver_version")),
        "last_seen": now,
    }
    with write_tx(rt.engine) as conn:
        new = _upsert(conn, t, {"site": site, "host_name": host, "vendor": vendor, "model": model}, values)
    return "Inserted new worker node GPU." if new else "Updated existing worker node GPU."


def nodes_of_queue(rt: Runtime, queue: str, limit: int = 200) -> list[dict[str, Any]]:
    """The nodes seen serving ``queue``, most recent first, each with its GPUs."""
    q = worker_node_queue
    with read_tx(rt.engine) as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(worker_node, q.c.last_seen.label("queue_last_seen"))
                .join(q, and_(q.c.site == worker_node.c.site, q.c.host_name == worker_node.c.host_name))
                .where(q.c.panda_queue == queue)
                .order_by(q.c.last_seen.desc())
                .limit(limit)
            ).mappings()
        ]
        hosts = {(r["site"], r["host_name"]) for r in rows}
        gpus: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if hosts:
            g = worker_node_gpus
            for r in conn.execute(
                select(g).where(g.c.host_name.in_({h for _, h in hosts})).order_by(g.c.model)
            ).mappings():
                if (r["site"], r["host_name"]) in hosts:
                    gpus.setdefault((r["site"], r["host_name"]), []).append(dict(r))
    for row in rows:
        row["gpus"] = gpus.get((row["site"], row["host_name"]), [])
    return rows
