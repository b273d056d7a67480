"""Reading tasks: status, details, parameters, jobs, datasets and files, as pbook asks for them.

Progress (nFiles, nFilesFinished, pctFinished...) is counted from the input files each time,
so it can never disagree with them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, union_all

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import jobs, jobs_archive
from pandawms.db.schema_tasks import task_datasets, task_files, task_params, tasks
from pandawms.model.errors import PandaError
from pandawms.model.identity import Identity, clean_user_id

#: Task columns pbook may filter on with plain equality.
FILTERABLE = frozenset(
    {"jediTaskID", "reqID", "status", "superStatus", "taskName", "userName", "prodSourceLabel", "vo", "site"}
)
_REGEX_META = frozenset(r"^$*+?\|()[]{}")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d")
INPUT_TYPES = ("pseudo_input", "input")
UNSUCCESSFUL = ("failed", "cancelled", "closed")


def parse_since(name: str, text: str | None) -> dt.datetime | None:
    """A ``%Y-%m-%d %H:%M:%S`` time (UTC) from the wire; a clear error naming ``name``."""
    if text is None or text == "":
        return None
    for fmt in _TIME_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise PandaError(f"Argument error: {name} must be a time like 2026-11-25 13:00:00, got {text[:40]!r}")


def task_row(conn: Connection, task_id: int) -> dict[str, Any] | None:
    """The task's columns, or None."""
    row = conn.execute(select(tasks).where(tasks.c.jediTaskID == task_id)).mappings().first()
    return dict(row) if row is not None else None


def get_status(rt: Runtime, task_id: int) -> str | None:
    """The task's status, or None when there is no such task."""
    with read_tx(rt.engine) as conn:
        return conn.execute(select(tasks.c.status).where(tasks.c.jediTaskID == task_id)).scalar_one_or_none()


def get_parameters(rt: Runtime, task_id: int) -> dict[str, Any] | None:
    """The parameters as submitted (with the server's userName/taskType), or None."""
    with read_tx(rt.engine) as conn:
        text = conn.execute(
            select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
        ).scalar_one_or_none()
    return json.loads(text) if text is not None else None


def job_ids(conn: Connection, task_id: int, unsuccessful_only: bool = False) -> list[int]:
    """PandaIDs of the task's jobs in both job tables, oldest first."""
    parts = []
    for table in (jobs, jobs_archive):
        stmt = select(table.c.PandaID).where(table.c.jediTaskID == task_id)
        if unsuccessful_only:
            stmt = stmt.where(table.c.jobStatus.in_(UNSUCCESSFUL))
        parts.append(stmt)
    return sorted({int(r[0]) for r in conn.execute(union_all(*parts))})


def get_job_ids(rt: Runtime, task_id: int, unsuccessful_only: bool = False) -> list[int]:
    """:func:`job_ids` in its own read transaction."""
    with read_tx(rt.engine) as conn:
        return job_ids(conn, task_id, unsuccessful_only)


def progress(conn: Connection, task_ids: list[int]) -> dict[int, dict[str, int]]:
    """Input-file counts and percentages per task."""
    counts: dict[int, Counter[str]] = {tid: Counter() for tid in task_ids}
    if task_ids:
        rows = conn.execute(
            select(task_files.c.jediTaskID, task_files.c.status, func.count())
            .where(task_files.c.jediTaskID.in_(task_ids), task_files.c.type.in_(INPUT_TYPES))
            .group_by(task_files.c.jediTaskID, task_files.c.status)
        )
        for tid, status, n in rows:
            counts[int(tid)][str(status)] += int(n)
    out = {}
    for tid, c in counts.items():
        total = sum(c.values())
        out[tid] = {
            "nFiles": total,
            "nFilesFinished": c["finished"],
            "nFilesFailed": c["failed"],
            "nFilesMissing": 0,
            "nFilesToBeUsed": c["ready"],
            "nFilesUsed": total - c["ready"],
            "nFilesOnHold": c["running"],
            "pctFinished": round(100 * c["finished"] / total) if total else 0,
            "pctFailed": round(100 * c["failed"] / total) if total else 0,
        }
    return out


def _details(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [int(r["jediTaskID"]) for r in rows]
    prog = progress(conn, ids)
    templates: dict[int, tuple[str, str | None]] = {}
    if ids:
        for tid, params, template in conn.execute(
            select(task_params.c.jediTaskID, task_params.c.taskParams, task_params.c.jobParamsTemplate).where(
                task_params.c.jediTaskID.in_(ids)
            )
        ):
            templates[int(tid)] = (params, template)
    out = []
    for row in rows:
        tid = int(row["jediTaskID"])
        params_text, template = templates.get(tid, ("{}", None))
        params = json.loads(params_text)
        item = {k: v for k, v in row.items() if k not in ("dn", "prodRole", "nextSerialNr")}
        item.update(prog[tid])
        item["job_execution_params"] = template
        item["task_creation_arguments"] = params.get("cliParams")
        item["raw_task_params"] = params
        out.append(item)
    return out


def detailed_since(
    rt: Runtime, who: Identity, since: str | None, filters_text: str | None, n_tasks: int
) -> list[dict[str, Any]]:
    """pbook show: the caller's tasks (another user's with a userName filter), newest first."""
    criteria: dict[str, str] = {"userName": who.name}
    regexes: dict[str, str] = {}
    if filters_text:
        try:
            given = orjson.loads(filters_text)
        except ValueError:
            raise PandaError("Argument error: filters is not valid JSON") from None
        if not isinstance(given, dict):
            raise PandaError("Argument error: filters must be a JSON object")
        for key, pattern in given.items():
            if key not in FILTERABLE:
                continue  # the real server ignores fields it does not know, too
            text = str(pattern)
            if _REGEX_META & set(text):
                try:
                    re.compile(text)
                except re.error:
                    raise PandaError(f"Argument error: filters.{key} is not a valid pattern") from None
                regexes[key] = text
            else:
                criteria[key] = text
    start = parse_since("since", since)
    stmt = select(tasks)
    for key, value in criteria.items():
        column = tasks.c[key]
        if key in ("jediTaskID", "reqID"):
            try:
                stmt = stmt.where(column == int(value))
            except ValueError:
                raise PandaError(
                    f"Argument error: filters.{key} must be an integer, got {value[:40]!r}"
                ) from None
        else:
            stmt = stmt.where(column == value)
    if start is not None:
        stmt = stmt.where(tasks.c.modificationTime >= start)
    stmt = stmt.order_by(tasks.c.jediTaskID.desc()).limit(max(1, min(n_tasks, 10000)))
    with read_tx(rt.engine) as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        result = _details(conn, rows)
    return [t for t in result if all(re.search(p, str(t.get(k, ""))) for k, p in regexes.items())]


def detailed_info(rt: Runtime, task_id: int) -> dict[str, Any] | None:
    """One task as pbook show lists it (every column, progress, parameters), or None."""
    with read_tx(rt.engine) as conn:
        row = task_row(conn, task_id)
        return _details(conn, [row])[0] if row is not None else None


def details(
    rt: Runtime, task_id: int, include_parameters: bool, include_status: bool
) -> dict[str, Any] | None:
    """task/get_details: inDS, outDS, statistics, PandaIDs (+ status, parameters)."""
    with read_tx(rt.engine) as conn:
        task = task_row(conn, task_id)
        if task is None:
            return None
        sets = [
            dict(r)
            for r in conn.execute(
                select(task_datasets).where(task_datasets.c.jediTaskID == task_id)
            ).mappings()
        ]
        ids = job_ids(conn, task_id)
        prog = progress(conn, [task_id])[task_id]
        states = Counter(
            str(r[0])
            for r in conn.execute(
                union_all(
                    select(jobs.c.jobStatus).where(jobs.c.jediTaskID == task_id),
                    select(jobs_archive.c.jobStatus).where(jobs_archive.c.jediTaskID == task_id),
                )
            )
        )
        params_text = conn.execute(
            select(task_params.c.taskParams).where(task_params.c.jediTaskID == task_id)
        ).scalar_one_or_none()
    out_names = [d["containerName"] or d["datasetName"] for d in sets if d["type"] in ("output", "log")]
    in_names = [d["containerName"] or d["datasetName"] for d in sets if d["type"] == "input"]
    stats = ",".join(f"{s}*{n}" for s, n in sorted(states.items()))
    data: dict[str, Any] = {
        "inDS": ",".join(dict.fromkeys(in_names)),
        "outDS": ",".join(dict.fromkeys(out_names)),
        "statistics": stats,
        "PandaID": ids,
        "mergeStatus": None,
        "mergePandaID": [],
        **prog,
    }
    if include_status:
        data["status"] = task["status"]
    if include_parameters and params_text is not None:
        data["taskParams"] = json.loads(params_text)
    return data


def modified_since(
    rt: Runtime, who: Identity, since: str, dn: str | None, full: bool, min_task_id: int | None, label: str
) -> dict[str, dict[str, Any]]:
    """get_tasks_modified_since: the user's tasks changed since ``since``, keyed by reqID (as JEDI)."""

    start = parse_since("since", since)
    if start is None:
        raise PandaError("Argument error: since is required")
    user = (clean_user_id(dn) or dn) if dn else who.name
    stmt = select(tasks).where(
        tasks.c.userName == user, tasks.c.modificationTime >= start, tasks.c.prodSourceLabel == label
    )
    if min_task_id is not None:
        stmt = stmt.where(tasks.c.jediTaskID > min_task_id)
    stmt = stmt.order_by(tasks.c.jediTaskID).limit(500)
    basic = (
        "jediTaskID modificationTime status processingType transUses transHome architecture reqID "
        "creationDate site cloud taskName"
    ).split()
    with read_tx(rt.engine) as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        prog = progress(conn, [int(r["jediTaskID"]) for r in rows]) if full else {}
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            item = {k: row[k] for k in basic}
            if full:
                item.update(prog[int(row["jediTaskID"])])
                item["PandaID"] = job_ids(conn, int(row["jediTaskID"]))
            out[str(row["reqID"] or row["jediTaskID"])] = item
    return out


def datasets_and_files(
    rt: Runtime, task_id: int, types: list[str], dataset_only: bool
) -> list[dict[str, Any]]:
    """task/get_datasets_and_files: each dataset of the given types with its files."""
    with read_tx(rt.engine) as conn:
        sets = [
            dict(r)
            for r in conn.execute(
                select(task_datasets)
                .where(task_datasets.c.jediTaskID == task_id, task_datasets.c.type.in_(types))
                .order_by(task_datasets.c.datasetID)
            ).mappings()
        ]
        out = []
        for ds in sets:
            entry: dict[str, Any] = {
                "dataset": {
                    "name": ds["datasetName"],
                    "id": ds["datasetID"],
                    "type": ds["type"],
                    "status": ds["status"],
                }
            }
            if not dataset_only:
                entry["files"] = [
                    {
                        "lfn": f["lfn"],
                        "scope": f["scope"],
                        "id": f["fileID"],
                        "status": f["status"],
                        "attemptNr": f["attemptNr"],
                        "maxAttempt": f["maxAttempt"],
                        "PandaID": f["PandaID"],
                    }
                    for f in conn.execute(
                        select(task_files)
                        .where(task_files.c.datasetID == ds["datasetID"])
                        .order_by(task_files.c.fileID)
                    ).mappings()
                ]
            out.append(entry)
    return out
