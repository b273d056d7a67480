"""Closing a job from the pilot's final report (what PanDA's Adder does).

The pilot ends a job with ``finished`` or ``failed`` plus a report of the files it produced.
The job is first stored as ``holding``; this module checks that every expected output and log
file is in the report with a size and checksum, records them on the files, and moves the job to
its final state. It runs in the same transaction as the pilot's update, so a node that dies
between the two leaves nothing half done.

On a server with a data management system, a finished task job whose outputs were written to
an RSE stays ``holding`` instead: the registration of its outputs in the task's datasets is
queued in the DDM outbox (same transaction), and the daemon finishes the job once Rucio has
them (:mod:`pandawms.core.tasks.outputs`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, select

from pandawms.core.jobs import ddm_outbox
from pandawms.core.jobs.retry import retry_if_possible
from pandawms.core.jobs.transitions import deferred_writes, move_job, move_job_via, update_row
from pandawms.db.schema import files
from pandawms.model.errors import DdmError, TaskBufferError
from pandawms.model.retry_rules import RetryRule
from pandawms.model.states import JobStatus

FileInfo = dict[str, Any]


class BadReport(ValueError):
    """The report cannot be read; the job fails with the reason."""


def parse_report(text: str | None) -> dict[str, FileInfo]:
    """Read the pilot's file report: JSON keyed by LFN (current pilots) or PoolFileCatalog XML."""
    if text is None or not text.strip() or text.strip() == "NULL":
        return {}
    body = text.strip()
    if body.startswith("<"):
        return _parse_pool_catalog(body)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadReport(f"output report is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadReport("output report must be a JSON object keyed by file name")
    report: dict[str, FileInfo] = {}
    for lfn, info in data.items():
        if not isinstance(info, dict):
            raise BadReport(f"output report entry for {lfn} must be an object")
        report[str(lfn)] = info
    return report


def _parse_pool_catalog(body: str) -> dict[str, FileInfo]:
    try:
        root = ET.fromstring(body)  # noqa: S314 - no entity expansion in ElementTree's default parser
    except ET.ParseError as exc:
        raise BadReport(f"output report XML is malformed: {exc}") from None
    report: dict[str, FileInfo] = {}
    for node in root.iter("File"):
        lfn_node = node.find("logical/lfn")
        if lfn_node is None or not lfn_node.get("name"):
            continue
        info: FileInfo = {"guid": node.get("ID")}
        for meta in node.iter("metadata"):
            info[meta.get("att_name") or ""] = meta.get("att_value")
        report[lfn_node.get("name") or ""] = info
    return report


def _checksum(info: FileInfo) -> tuple[str | None, str | None]:
    """(checksum, md5sum) columns from a report entry."""
    adler = info.get("adler32") or info.get("checksum")
    md5 = info.get("md5sum")
    if adler:
        text = str(adler)
        return (text if ":" in text else f"ad:{text}")[:36], None
    if md5:
        return f"md5:{md5}"[:36], str(md5)[:36]
    return None, None


def endpoint_of(token: str | None) -> str | None:
    """The RSE a ``dst:<RSE>``/``ddd:<RSE>`` space token names (None for a plain token)."""
    first = (token or "").split(",")[0]
    for prefix in ("dst:", "ddd:"):
        if first.startswith(prefix) and len(first) > len(prefix):
            return first[len(prefix) :]
    return None


def _plain_checksums(info: FileInfo) -> tuple[str | None, str | None]:
    """(adler32, md5) hex digits from a report entry, prefixes removed."""
    adler = str(info.get("adler32") or info.get("checksum") or "") or None
    if adler and adler.startswith("ad:"):
        adler = adler[3:]
    elif adler and adler.startswith("md5:"):
        return None, adler[4:]
    md5 = info.get("md5sum")
    return adler, (str(md5) if md5 else None)


def _guid(value: Any) -> str | None:
    """A GUID in its canonical form, or None when ``value`` is not one."""
    try:
        return str(uuid.UUID(str(value))).upper() if value else None
    except ValueError:
        return None


def _registration(outputs: list[dict[str, Any]], report: dict[str, FileInfo]) -> list[dict[str, Any]]:
    """The outputs to register: those with a dataset and an RSE, reported with size and checksum."""
    entries = []
    for f in outputs:
        info = report.get(f["lfn"])
        rse = endpoint_of(f.get("destinationDBlockToken"))
        dataset = f.get("destinationDBlock") or f.get("dataset")
        if info is None or rse is None or not dataset:
            continue
        adler32, md5 = _plain_checksums(info)
        try:
            size = int(info.get("fsize") or 0)
        except (TypeError, ValueError):
            size = 0
        entries.append(
            {
                "lfn": f["lfn"],
                "type": f["type"],
                "scope": f.get("scope"),
                "dataset": dataset,
                "rse": rse,
                "fsize": size,
                "adler32": adler32,
                "md5": md5,
                # Only a well-formed GUID goes to the catalogue (the pilot's, else the file's).
                "guid": _guid(info.get("guid")) or _guid(f.get("GUID")),
            }
        )
    return entries


def prefetch_files(conn: Connection, panda_ids: Collection[int]) -> None:
    """Read the files of every job in ``panda_ids`` with one statement for the batch on ``conn``.

    :func:`finalize` then takes a job's files from there instead of reading them itself. Does
    nothing outside a batch (no :class:`DeferredWrites` on ``conn``).
    """
    writes = deferred_writes(conn)
    if writes is None or not panda_ids:
        return
    found: dict[int, list[dict[str, Any]]] = {int(pid): [] for pid in panda_ids}
    stmt = select(files).where(files.c.PandaID.in_(sorted(found))).order_by(files.c.PandaID, files.c.rowID)
    for row in conn.execute(stmt).mappings():
        found[int(row["PandaID"])].append(dict(row))
    writes.prefetched[_FILES] = found


_FILES = "files"


def _files_of(conn: Connection, panda_id: int) -> list[dict[str, Any]]:
    writes = deferred_writes(conn)
    batch = writes.prefetched.get(_FILES) if writes is not None else None
    if batch is not None and panda_id in batch:
        return batch.pop(panda_id)
    stmt = select(files).where(files.c.PandaID == panda_id).order_by(files.c.rowID)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def finalize(
    conn: Connection,
    job: dict[str, Any],
    reported: str,
    report_text: str | None,
    now: dt.datetime,
    pilot_values: dict[str, Any],
    reason: str,
    rules: Sequence[RetryRule],
    register: bool = False,
) -> str:
    """Close a job from the pilot's final report; return its final state (or ``holding``).

    The job (as read, in the state the pilot found it) goes through ``holding`` with the
    pilot's ``pilot_values`` to its final state in one guarded UPDATE
    (:func:`~pandawms.core.jobs.transitions.move_job_via`); both moves are in the status log.
    A failed job is retried when one of ``rules`` (the runtime's retry rules) says so.
    ``register``: the server has a data management system; a finished task job's outputs are
    then queued for registration and the job stays ``holding`` until they are registered.
    """
    panda_id = job["PandaID"]
    if register and job.get("jediTaskID") and ddm_outbox.has_registration(conn, panda_id):
        # A repeated final report: the registration is under way already.
        return JobStatus.HOLDING.value
    job_files = _files_of(conn, panda_id)
    moved = {**job, **pilot_values}  # the job as holding leaves it
    values: dict[str, Any] = {}
    final = JobStatus.FINISHED.value if reported == "finished" else JobStatus.FAILED.value
    try:
        report = parse_report(report_text)
    except BadReport as exc:
        report = {}
        if final == JobStatus.FINISHED.value:
            final = JobStatus.FAILED.value
            values.update(ddmErrorCode=int(DdmError.ADDER), ddmErrorDiag=str(exc)[:500])
    outputs = [f for f in job_files if f["type"] in ("output", "log")]
    if final == JobStatus.FINISHED.value:
        for f in outputs:
            info = report.get(f["lfn"])
            allowed_missing = "an" in (f["dispatchDBlockToken"] or "").split(",")
            if info is None or info.get("fsize") in (None, "") or _checksum(info) == (None, None):
                if allowed_missing and info is None:
                    continue
                final = JobStatus.FAILED.value
                values.update(
                    ddmErrorCode=int(DdmError.ADDER),
                    ddmErrorDiag=f"expected output {f['lfn']} is missing in pilot JSON"[:500],
                )
                break
    file_updates: list[tuple[int, dict[str, Any]]] = []
    for f in outputs:
        info = report.get(f["lfn"])
        update: dict[str, Any] = {"modificationTime": now}
        if info is not None and (final == JobStatus.FINISHED.value or f["type"] == "log"):
            checksum, md5 = _checksum(info)
            try:
                update["fsize"] = int(info.get("fsize") or 0)
            except (TypeError, ValueError):
                update["fsize"] = 0
            update.update(status="ready", checksum=checksum, md5sum=md5)
            if info.get("guid"):
                update["GUID"] = str(info["guid"])[:64]
        elif "an" in (f["dispatchDBlockToken"] or "").split(",") and final == JobStatus.FINISHED.value:
            update["status"] = "nooutput"
        else:
            update["status"] = "failed"
        file_updates.append((f["rowID"], update))
    if register and final == JobStatus.FINISHED.value and moved.get("jediTaskID"):
        entries = _registration(outputs, report)
        if entries:
            for row_id, update in file_updates:
                update_row(conn, files, "rowID", row_id, update)
            ddm_outbox.enqueue(
                conn,
                ddm_outbox.REGISTER,
                {"files": entries},
                now,
                panda_id=panda_id,
                task_id=int(moved["jediTaskID"]),
            )
            values["jobSubStatus"] = ddm_outbox.REGISTERING
            if moved.get("endTime") is None:
                values["endTime"] = now
            move_job(conn, job, JobStatus.HOLDING.value, now, {**pilot_values, **values}, reason=reason)
            return JobStatus.HOLDING.value
    if final == JobStatus.FAILED.value and moved.get("commandToPilot") == "tobekilled":
        final = JobStatus.CANCELLED.value
        if not moved.get("taskBufferErrorCode"):
            values["taskBufferErrorCode"] = int(TaskBufferError.KILL)
    if moved.get("endTime") is None:
        values["endTime"] = now
    for row_id, update in file_updates:
        if final == JobStatus.FAILED.value:  # the retry below reads the files back
            conn.execute(files.update().where(files.c.rowID == row_id).values(**update))
        else:
            update_row(conn, files, "rowID", row_id, update)
    holding = JobStatus.HOLDING.value
    move_job_via(conn, job, holding, final, now, pilot_values, values, reason, f"pilot reported {reported}")
    if final == JobStatus.FAILED.value:
        retry_if_possible(conn, panda_id, now, moved.get("modificationHost") or "", rules=rules)
    return final
