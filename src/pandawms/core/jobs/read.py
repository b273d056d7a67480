"""Reading jobs: descriptions for users, statuses for pilots and Harvester."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, literal, select, union_all

from pandawms.core.runtime import Runtime
from pandawms.db.engine import read_tx
from pandawms.db.schema import SERVER_JOB_COLUMNS, files, job_metadata, job_params, jobs, jobs_archive
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES

#: Most IDs one read call may ask for (the real server caps getJobStatus at 5500).
MAX_IDS_PER_READ = 5500

Job = dict[str, Any]


def _chunks(ids: Sequence[int], size: int = 900) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def fetch_rows(
    conn: Connection, table: Table, ids: Sequence[int], columns: Sequence[str] | None = None
) -> dict[int, Job]:
    """Rows of ``table`` for ``ids`` keyed by PandaID (missing IDs are absent)."""
    cols = [table.c[name] for name in columns] if columns else [table]
    out: dict[int, Job] = {}
    for chunk in _chunks(list(ids)):
        for row in conn.execute(select(*cols).where(table.c.PandaID.in_(chunk))).mappings():
            out[int(row["PandaID"])] = dict(row)
    return out


def load_jobs(
    conn: Connection, ids: Sequence[int], include_archive: bool = True, with_details: bool = True
) -> dict[int, Job]:
    """Full jobs (columns, files, parameters, metadata) for ``ids``, live table first."""
    found = fetch_rows(conn, jobs, ids)
    if include_archive:
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(fetch_rows(conn, jobs_archive, missing))
    if not with_details or not found:
        for job in found.values():
            for name in SERVER_JOB_COLUMNS:
                job.pop(name, None)
        return found
    return attach_details(conn, found)


def attach_details(conn: Connection, found: dict[int, Job]) -> dict[int, Job]:
    """Add files, parameters and metadata to job rows already read (keyed by PandaID)."""
    known = list(found)
    file_rows: dict[int, list[Job]] = {i: [] for i in known}
    for chunk in _chunks(known):
        for row in conn.execute(
            select(files).where(files.c.PandaID.in_(chunk)).order_by(files.c.rowID)
        ).mappings():
            file_rows[int(row["PandaID"])].append({name: row[name] for name in FILE_ATTRIBUTE_NAMES})
    texts = _params_and_metadata(conn, known)
    for panda_id, job in found.items():
        for name in SERVER_JOB_COLUMNS:
            job.pop(name, None)
        job["jobParameters"] = texts.get((panda_id, "p"))
        job["metadata"] = texts.get((panda_id, "m"))
        job["Files"] = file_rows[panda_id]
    return found


def _params_and_metadata(conn: Connection, ids: Sequence[int]) -> dict[tuple[int, str], Any]:
    """Each job's parameters ("p") and metadata ("m"), read in one statement (UNION ALL).

    Dispatch reads them for every job it hands out, inside its transaction: one round trip
    instead of two.
    """
    out: dict[tuple[int, str], Any] = {}
    for chunk in _chunks(ids, 450):
        params = select(
            job_params.c.PandaID, literal("p").label("kind"), job_params.c.jobParameters.label("value")
        )
        metas = select(
            job_metadata.c.PandaID, literal("m").label("kind"), job_metadata.c.metaData.label("value")
        )
        stmt = union_all(
            params.where(job_params.c.PandaID.in_(chunk)), metas.where(job_metadata.c.PandaID.in_(chunk))
        )
        for panda_id, kind, value in conn.execute(stmt):
            out[(int(panda_id), str(kind))] = value
    return out


def get_descriptions(rt: Runtime, ids: Sequence[int], include_archive: bool) -> list[Job | None]:
    """What ``job/get_description`` answers: one full job or None per requested ID, in order."""
    with read_tx(rt.engine) as conn:
        found = load_jobs(conn, ids, include_archive=include_archive)
    return [found.get(i) for i in ids]


def get_statuses(rt: Runtime, ids: Sequence[int]) -> dict[int, Job]:
    """jobStatus, attemptNr and commandToPilot of each known job, live or archived."""
    columns = ("PandaID", "jobStatus", "attemptNr", "commandToPilot")
    with read_tx(rt.engine) as conn:
        found = fetch_rows(conn, jobs, ids, columns)
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(fetch_rows(conn, jobs_archive, missing, columns))
    return found
