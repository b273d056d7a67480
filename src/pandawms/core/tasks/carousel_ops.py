"""Operators' commands on data carousel requests (the v1 ``data_carousel/*`` methods).

A request is named by ``request_id`` or, when that is not given, by ``dataset`` (its queued,
staging or done request). Answers follow the real server's: ``success`` false with the reason
for a refusal, and for a success the request's id, dataset and rule in ``data``.

- change_staging_destination: the request ends (staging: cancelled, done: retired) and a new one
  stages the dataset to another disk RSE, never the previous ones; its tasks follow the new one
  (files not yet given to a job wait for the new copy).
- change_staging_source: a queued request gets another tape; a staging one has its rule's source
  dropped (any tape may serve it) or replaced.
- force_to_staging: a queued request is staged now, whatever the limit of staging requests.
- retire_unused: a done request no active task needs is retired and its rule let expire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete

from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.carousel import (
    MAX_DATASET,
    MAX_RSE,
    Request,
    choose_destination,
    end_request,
    expire_rule,
    get_request,
    input_datasets,
    related_tasks,
    request_by_dataset,
    set_params,
    stage_request,
    tapes_holding,
)
from pandawms.core.tasks.commands import Reply
from pandawms.core.tasks.inputs import ddm_for
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_carousel import data_carousel_relations as relations
from pandawms.db.schema_carousel import data_carousel_requests as requests
from pandawms.db.schema_tasks import task_dataset_rses, task_files
from pandawms.ddm.interface import DDMError
from pandawms.model.carousel import RESUBMITTABLE, CarouselStatus
from pandawms.model.errors import Invalid

C = CarouselStatus
NOT_FOUND = "failed to get corresponding request"


def _check_input(dataset: str | None, source_rse: str | None = None) -> None:
    if dataset is not None and len(dataset) > MAX_DATASET:
        raise Invalid(f"Argument error: dataset must be at most {MAX_DATASET} characters")
    if source_rse is not None and len(source_rse) > MAX_RSE:
        raise Invalid(f"Argument error: source_rse must be at most {MAX_RSE} characters")


def find(rt: Runtime, request_id: int | None, dataset: str | None) -> Request | None:
    """The request an operator names: by id, else the dataset's reusable one."""
    _check_input(dataset)
    with read_tx(rt.engine) as conn:
        if request_id is not None:
            return get_request(conn, request_id)
        if dataset:
            return request_by_dataset(conn, dataset)
    return None


def _summary(request: Request, *keys: str) -> dict[str, Any]:
    return {key: getattr(request, key) for key in ("request_id", "dataset", *keys)}


# --- change_staging_destination ------------------------------------------------------------------


def _resubmit(conn: Connection, old: Request, now: Any) -> int:
    """End ``old`` and insert its successor (queued); the tasks move to it. The new id."""
    # A staging request is cancelled, a done one retired; cancelled and retired ones stay.
    if old.status in (C.STAGING, C.DONE):
        ending = C.CANCELLED if old.status == C.STAGING else C.RETIRED
        end_request(conn, old.request_id, ending, now, resubmitted=True)
    excluded = sorted(
        {
            *(old.params.get("excluded_dst_list") or []),
            *([old.destination_rse] if old.destination_rse else []),
        }
    )
    result = conn.execute(
        requests.insert().values(
            dataset=old.dataset,
            source_rse=old.source_rse,
            source_tape=old.source_tape,
            status=C.QUEUED.value,
            total_files=old.total_files,
            dataset_size=old.dataset_size,
            staged_files=0,
            staged_size=0,
            creation_time=now,
            modification_time=now,
            parameters=set_params(
                old,
                resub_from=old.request_id,
                prev_src=old.source_rse,
                prev_dst=old.destination_rse,
                excluded_dst_list=excluded,
            ),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    new_id = int(key[0])
    conn.execute(relations.update().where(relations.c.request_id == old.request_id).values(request_id=new_id))
    # Files not yet given to a job wait for the new copy; the old one is no place to send jobs.
    for _, dataset_id in input_datasets(conn, old.dataset, related_tasks(conn, new_id, active_only=True)):
        conn.execute(
            task_files.update()
            .where(task_files.c.datasetID == dataset_id, task_files.c.status == "ready")
            .values(status="staging", modificationTime=now)
        )
        if old.destination_rse:
            conn.execute(
                delete(task_dataset_rses).where(
                    task_dataset_rses.c.datasetID == dataset_id,
                    task_dataset_rses.c.rse == old.destination_rse,
                )
            )
    return new_id


def change_staging_destination(rt: Runtime, request_id: int | None, dataset: str | None) -> Reply:
    """Stage the request's dataset again, to a disk RSE it has not used."""
    old = find(rt, request_id, dataset)
    if old is None:
        return Reply(False, NOT_FOUND, None)
    failed = f"failed to resubmit request_id={old.request_id} : "
    if old.status not in RESUBMITTABLE:
        return Reply(False, failed + f"status={old.status} not resubmittable; skipped", None)
    ddm = ddm_for(rt)
    excluded = {*(old.params.get("excluded_dst_list") or []), old.destination_rse or ""}
    destination = choose_destination(rt, ddm, excluded)
    if destination is None:
        return Reply(
            False,
            failed + f"no other available destination RSE for request_id={old.request_id}; skipped",
            None,
        )
    now = utcnow()
    with write_tx(rt.engine) as conn:
        current = get_request(conn, old.request_id, lock=True)
        if current is None or current.status != old.status:
            return Reply(False, failed + "request changed concurrently; skipped", None)
        new_id = _resubmit(conn, current, now)
    expire_rule(ddm, old.ddm_rule_id)
    ok, why, new = stage_request(rt, new_id, destination=destination, ddm=ddm)
    if not ok or new is None or new.status != C.STAGING:
        return Reply(False, failed + f"failed to stage resubmitted request_id={new_id}: {why}"[:500], None)
    return Reply(
        True,
        "new request resubmitted, destination changed",
        {"request_id": old.request_id, "new_request_id": new_id, "dataset": new.dataset},
    )


# --- change_staging_source -----------------------------------------------------------------------


def change_staging_source(
    rt: Runtime,
    request_id: int | None,
    dataset: str | None,
    cancel_fts: bool = False,
    change_src_expr: bool = False,
    source_rse: str | None = None,
) -> Reply:
    """Another tape for a queued request; for a staging one, its rule's source dropped or replaced."""
    _check_input(dataset, source_rse)
    request = find(rt, request_id, dataset)
    if request is None:
        return Reply(False, NOT_FOUND, None)
    status, original = request.status, request.source_rse
    if status not in (C.QUEUED, C.STAGING):
        return Reply(
            False, f"request_id={request.request_id} status={status} not queued or staging; skipped", None
        )
    failed = f"failed to change source request_id={request.request_id} : "
    change_src_expr = change_src_expr or bool(source_rse)
    ddm = ddm_for(rt)
    try:
        candidates = set(tapes_holding(ddm, request.dataset))
    except DDMError as exc:
        return Reply(False, failed + exc.message, None)
    candidates.discard(original or "")
    new_source: str | None = None
    if status == C.QUEUED or change_src_expr:
        if not candidates:
            return Reply(
                False, failed + f"dataset={request.dataset} has no other source RSE available; skipped", None
            )
        if source_rse and source_rse not in candidates:
            return Reply(
                False,
                failed
                + f"dataset={request.dataset} source_rse={source_rse} not in available RSEs {sorted(candidates)} ; skipped",
                None,
            )
        new_source = source_rse or sorted(candidates)[0]
    notes = ""
    if status == C.STAGING and request.ddm_rule_id:
        try:
            ddm.update_rule(request.ddm_rule_id, {"source_replica_expression": new_source})
        except DDMError as exc:
            return Reply(False, failed + exc.message, None)
        if cancel_fts:
            try:
                ddm.update_rule(request.ddm_rule_id, {"cancel_requests": True, "state": "STUCK"})
                ddm.update_rule(request.ddm_rule_id, {"boost_rule": True})
            except DDMError as exc:
                notes = f"; failed to cancel the transfers: {exc.message}"
    if new_source is not None:
        with write_tx(rt.engine) as conn:
            done = conn.execute(
                requests.update()
                .where(requests.c.request_id == request.request_id, requests.c.status == status)
                .values(source_rse=new_source, source_tape=new_source, modification_time=utcnow())
            )
            if done.rowcount != 1:
                return Reply(False, failed + "request changed concurrently; skipped", None)
        message = f"status={status} changed source_rse from {original} to {new_source}"
    else:
        message = f"status={status} source replica expression is dropped"
    with read_tx(rt.engine) as conn:
        after = get_request(conn, request.request_id) or request
    return Reply(True, (message + notes)[:1000], _summary(after, "source_rse", "ddm_rule_id"))


# --- force_to_staging and retire_unused ---------------------------------------------------------


def force_to_staging(rt: Runtime, request_id: int | None, dataset: str | None) -> Reply:
    """Stage a queued request now, ahead of the queue."""
    request = find(rt, request_id, dataset)
    if request is None:
        return Reply(False, NOT_FOUND, None)
    ok, why, staged = stage_request(rt, request.request_id)
    if not ok or staged is None:
        return Reply(False, f"failed to stage request_id={request.request_id} : {why}"[:1000], None)
    return Reply(True, f"status has become {staged.status}", _summary(staged, "status", "ddm_rule_id"))


def retire_unused(rt: Runtime, request_id: int | None, dataset: str | None) -> Reply:
    """Retire a done request that no active task needs; its rule is let expire."""
    request = find(rt, request_id, dataset)
    if request is None:
        return Reply(False, NOT_FOUND, None)
    failed = f"failed to retire request_id={request.request_id} : "
    if request.status != C.DONE:
        return Reply(False, failed + f"status is {request.status}, not done ; skipped", None)
    with write_tx(rt.engine) as conn:
        active = related_tasks(conn, request.request_id, active_only=True)
        if active:
            return Reply(False, failed + f"still has {len(active)} active related tasks ; skipped", None)
        if not end_request(
            conn, request.request_id, C.RETIRED, utcnow(), retire_reason="manually_retired_unused"
        ):
            return Reply(False, failed + "request changed concurrently; skipped", None)
        retired = get_request(conn, request.request_id)
    expire_rule(ddm_for(rt), request.ddm_rule_id)
    assert retired is not None
    return Reply(True, "retired successfully", _summary(retired, "status", "ddm_rule_id"))
