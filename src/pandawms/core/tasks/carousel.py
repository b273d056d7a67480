"""The data carousel: input that is only on tape is staged to a disk RSE before its jobs run.

When a task is refined, each input dataset that no disk RSE holds completely but a tape does gets
a staging request (``data_carousel_requests``, shared by every task over the same dataset through
``data_carousel_relations``); its files are stored ``staging`` and the task waits in ``staging``.
The carousel pass (a periodic task) then:

1. cancels requests no active task needs any more (their rule is let expire);
2. stages queued requests, at most ``carousel_max_staging`` at once: a replication rule from the
   tape to a disk RSE that a queue reads (the destination is also recorded as where the task's
   input is, so brokerage sends the jobs to queues reading it);
3. follows staging requests: every file that has an available replica on the destination becomes
   ``ready`` in every related task as soon as Rucio shows it, so jobs are made as files arrive,
   not all at the end; a task in ``staging`` with a ready file becomes ``ready``. A request is
   ``done`` when the rule is satisfied and every file is on disk.

Data management calls are made outside any transaction; each database change is one transaction
that rechecks the request's status, so a pass that races an operator's command changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select

from pandawms.core.queues.catalogue import list_queues
from pandawms.core.queues.storages import queue_storage
from pandawms.core.runtime import Runtime, utcnow
from pandawms.core.tasks.inputs import InputFiles, ddm_for
from pandawms.core.tasks.transitions import lock_task, move_task
from pandawms.db.engine import read_tx, write_tx
from pandawms.db.schema_carousel import data_carousel_relations as relations
from pandawms.db.schema_carousel import data_carousel_requests as requests
from pandawms.db.schema_tasks import task_dataset_rses, task_datasets, task_files, tasks
from pandawms.ddm.interface import DDM, DDMError, RuleNotFound, RuleState, parse_did
from pandawms.model.carousel import ACTIVE, REUSABLE, CarouselStatus
from pandawms.model.task_states import FINAL, TaskStatus

log = logging.getLogger("pandawms.carousel")

C = CarouselStatus
T = TaskStatus
#: Lifetimes of a staging rule while staging and once done, in seconds (the real server's days).
STAGING_LIFETIME = 15 * 86400
DONE_LIFETIME = 30 * 86400
#: Lifetime given to the rule of a request that ends: Rucio lets it expire (the real server's way).
EXPIRE_SOON = 5
#: Most requests one pass reads from the data management system.
PER_PASS = 200
#: Column sizes, for the refusals of operator input.
MAX_DATASET = 256
MAX_RSE = 64


@dataclass(frozen=True)
class Request:
    """One row of ``data_carousel_requests``."""

    request_id: int
    dataset: str
    source_rse: str | None
    destination_rse: str | None
    ddm_rule_id: str | None
    status: str
    total_files: int | None
    staged_files: int | None
    dataset_size: int | None
    staged_size: int | None
    creation_time: dt.datetime
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    modification_time: dt.datetime
    check_time: dt.datetime | None
    source_tape: str | None
    parameters: str | None
    last_staged_time: dt.datetime | None

    @property
    def params(self) -> dict[str, Any]:
        try:
            value = json.loads(self.parameters or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        """The request as the monitor and the CLI show it (times in ISO format)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = (
                value.isoformat(sep=" ", timespec="seconds") if isinstance(value, dt.datetime) else value
            )
        return out


def _request(row: Any) -> Request:
    return Request(**{name: row[name] for name in Request.__dataclass_fields__})


def canonical(dataset: str) -> str:
    """``scope:name`` of a dataset as users write it (a bare name gets its scope by convention)."""
    try:
        return str(parse_did(dataset))
    except DDMError:
        return dataset.strip()[:MAX_DATASET]


def get_request(conn: Connection, request_id: int, lock: bool = False) -> Request | None:
    """One request by id (locked for update when asked, where the backend can)."""
    stmt = select(requests).where(requests.c.request_id == request_id)
    if lock and conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return _request(row) if row is not None else None


def request_by_dataset(conn: Connection, dataset: str) -> Request | None:
    """The reusable (queued, staging or done) request of a dataset; the newest if several."""
    row = (
        conn.execute(
            select(requests)
            .where(
                requests.c.dataset == canonical(dataset), requests.c.status.in_([s.value for s in REUSABLE])
            )
            .order_by(requests.c.request_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return _request(row) if row is not None else None


def list_requests(
    rt: Runtime, status: str | None = None, task_id: int | None = None, limit: int = 1000
) -> list[Request]:
    """Requests, newest first: all, of one status, or those a task waits for."""
    stmt = select(requests).order_by(requests.c.request_id.desc()).limit(max(1, min(limit, 10000)))
    if status:
        stmt = stmt.where(requests.c.status == status)
    if task_id is not None:
        stmt = stmt.where(
            requests.c.request_id.in_(select(relations.c.request_id).where(relations.c.task_id == task_id))
        )
    with read_tx(rt.engine) as conn:
        return [_request(r) for r in conn.execute(stmt).mappings()]


def related_tasks(conn: Connection, request_id: int, active_only: bool = False) -> list[int]:
    """Tasks waiting for (or having used) a request; only those not final with ``active_only``."""
    stmt = (
        select(relations.c.task_id)
        .join(tasks, tasks.c.jediTaskID == relations.c.task_id)
        .where(relations.c.request_id == request_id)
        .order_by(relations.c.task_id)
    )
    if active_only:
        stmt = stmt.where(tasks.c.status.not_in([s.value for s in FINAL]))
    return [int(r[0]) for r in conn.execute(stmt)]


def set_params(old: Request | None, **values: Any) -> str:
    params = dict(old.params) if old is not None else {}
    params.update(values)
    return json.dumps(params, sort_keys=True)


# --- the task side: requests made at refinement ----------------------------------------------------


def request_staging(
    conn: Connection, task: dict[str, Any], contents: InputFiles, now: dt.datetime
) -> list[int]:
    """Make or join a request for each input stream that is on tape only; the request ids.

    Runs in the refiner's transaction: the task's staging files, its requests and its relations
    commit together. A dataset with a queued or staging request joins that one; a done request
    is retired (its copy on disk is gone, or the stream would not need staging) and a new one made.
    """
    task_id = int(task["jediTaskID"])
    ids: list[int] = []
    for part in contents:
        if not part.needs_staging:
            continue
        dataset = canonical(part.stream.dataset)
        found = request_by_dataset(conn, dataset)
        if found is not None and found.status == C.DONE:
            # Done, yet the data is on tape only again (its rule expired): stage it anew.
            end_request(conn, found.request_id, C.RETIRED, now, retire_reason="replicas_gone")
            found = None
        if found is not None:
            request_id = found.request_id
        else:
            result = conn.execute(
                requests.insert().values(
                    dataset=dataset,
                    source_rse=part.tapes[0][:MAX_RSE],
                    source_tape=part.tapes[0][:MAX_RSE],
                    status=C.QUEUED.value,
                    staged_files=0,
                    staged_size=0,
                    creation_time=now,
                    modification_time=now,
                    parameters=json.dumps(
                        {
                            "task_id": task_id,
                            "task_type": task.get("taskType"),
                            "task_user": task.get("userName"),
                            "task_group": task.get("workingGroup"),
                            "task_gshare": task.get("gshare"),
                        },
                        sort_keys=True,
                    ),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            request_id = int(key[0])
        exists = conn.execute(
            select(relations.c.request_id).where(
                relations.c.request_id == request_id, relations.c.task_id == task_id
            )
        ).first()
        if exists is None:
            conn.execute(relations.insert().values(request_id=request_id, task_id=task_id))
        if found is not None and found.destination_rse:
            _locate(conn, dataset, [task_id], found.destination_rse)
        ids.append(request_id)
    return ids


# --- choosing RSEs ----------------------------------------------------------------------------------


def tapes_holding(ddm: DDM, dataset: str) -> list[str]:
    """Tape RSEs holding every file of the dataset."""
    where: set[str] | None = None
    for replica in ddm.list_replicas([dataset]):
        here = set(replica.rses)
        where = here if where is None else where & here
    return sorted(r for r in where or () if ddm.rse_info(r).is_tape)


def choose_destination(rt: Runtime, ddm: DDM, excluded: Iterable[str] = ()) -> str | None:
    """A disk RSE to stage to: one that active queues read, the most read first, never a tape.

    Staging is only useful where jobs can read the data, so the candidates come from the queues'
    storage definitions; ``carousel_destinations`` (a comma list) narrows them when set.
    """
    skip = set(excluded)
    allowed = {r.strip() for r in rt.settings.carousel_destinations.split(",") if r.strip()}
    readers: Counter[str] = Counter()
    for queue in list_queues(rt):
        storage = queue_storage(rt, queue.name)
        for rse in storage.read if storage is not None else ():
            readers[rse] += 1
    for rse, _ in sorted(readers.items(), key=lambda item: (-item[1], item[0])):
        if rse in skip or (allowed and rse not in allowed):
            continue
        try:
            if ddm.rse_info(rse).is_tape:
                continue
        except DDMError as exc:
            log.warning("carousel: cannot read RSE %s: %s", rse, exc.message)
            continue
        return rse
    return None


# --- staging a request ---------------------------------------------------------------------------


def end_request(conn: Connection, request_id: int, status: C, now: dt.datetime, **params: Any) -> bool:
    """Move a request to cancelled or retired (guarded on its current status); True if it moved."""
    old = get_request(conn, request_id, lock=True)
    allowed = ACTIVE if status is C.CANCELLED else frozenset({C.DONE})
    if old is None or old.status not in allowed:
        return False
    values: dict[str, Any] = {"status": status.value, "modification_time": now}
    if status is C.CANCELLED:
        values["end_time"] = now
    if params:
        values["parameters"] = set_params(old, **params)
    done = conn.execute(
        requests.update()
        .where(requests.c.request_id == request_id, requests.c.status == old.status)
        .values(**values)
    )
    return done.rowcount == 1


def expire_rule(ddm: DDM, rule_id: str | None) -> str:
    """Let a rule expire soon; an empty string, or why it could not be done."""
    if not rule_id:
        return ""
    try:
        ddm.update_rule(rule_id, {"lifetime": EXPIRE_SOON})
    except RuleNotFound:
        return ""
    except DDMError as exc:
        log.warning("carousel: cannot expire rule %s: %s", rule_id, exc.message)
        return exc.message
    return ""


def stage_request(
    rt: Runtime, request_id: int, destination: str | None = None, ddm: DDM | None = None
) -> tuple[bool, str, Request | None]:
    """Stage a queued request now: a rule from its tape to a disk RSE; (ok, why not, request)."""
    source = ddm or ddm_for(rt)
    now = utcnow()
    with read_tx(rt.engine) as conn:
        request = get_request(conn, request_id)
        active = related_tasks(conn, request_id, active_only=True) if request is not None else []
    if request is None:
        return False, "request not found", None
    if request.status != C.QUEUED:
        return False, f"status={request.status} not queued; skipped", request
    if not active:
        with write_tx(rt.engine) as conn:
            end_request(conn, request_id, C.CANCELLED, now, cancel_reason="queued_while_no_active_tasks")
        return False, "no active related tasks; skipped", request
    try:
        info = source.dataset_info(request.dataset)
        tape = request.source_rse or next(iter(tapes_holding(source, request.dataset)), None)
        if not tape:
            return False, f"dataset={request.dataset} is on no tape RSE; skipped", request
        target = destination or choose_destination(rt, source, request.params.get("excluded_dst_list") or ())
        if not target:
            return (
                False,
                "no destination RSE: no active queue reads a disk RSE (carousel_destinations)",
                request,
            )
        rule_id = source.add_rule(
            request.dataset, target, lifetime=STAGING_LIFETIME, source_replica_expression=tape
        )
    except DDMError as exc:
        return False, f"failed to submit DDM rule: {exc.message}"[:500], request
    with write_tx(rt.engine) as conn:
        current = get_request(conn, request_id, lock=True)
        if current is None or current.status != C.QUEUED:
            return False, "request changed concurrently; skipped", current
        conn.execute(
            requests.update()
            .where(requests.c.request_id == request_id, requests.c.status == C.QUEUED.value)
            .values(
                status=C.STAGING.value,
                source_rse=tape[:MAX_RSE],
                destination_rse=target[:MAX_RSE],
                ddm_rule_id=rule_id[:64],
                total_files=info.length,
                dataset_size=info.bytes,
                start_time=now,
                modification_time=now,
            )
        )
        waiting = related_tasks(conn, request_id)
        _locate(conn, request.dataset, waiting, target)
        if current.params.get("problem"):  # the reason it could not stage before is gone
            conn.execute(
                requests.update()
                .where(requests.c.request_id == request_id)
                .values(parameters=set_params(current, problem=None))
            )
            conn.execute(
                tasks.update()
                .where(tasks.c.jediTaskID.in_(waiting), tasks.c.status == T.STAGING.value)
                .values(errorDialog=None)
            )
        staged = get_request(conn, request_id)
    log.info(
        "carousel: request %d stages %s from %s to %s (rule %s)",
        request_id,
        request.dataset,
        tape,
        target,
        rule_id,
    )
    return True, "", staged


def input_datasets(conn: Connection, dataset: str, task_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(task id, dataset id) of the tasks' input datasets that are ``dataset``."""
    if not task_ids:
        return []
    rows = conn.execute(
        select(task_datasets.c.jediTaskID, task_datasets.c.datasetID, task_datasets.c.datasetName).where(
            task_datasets.c.jediTaskID.in_(list(task_ids)), task_datasets.c.type == "input"
        )
    )
    return [(int(t), int(d)) for t, d, name in rows if canonical(name) == dataset]


def _locate(
    conn: Connection, dataset: str, task_ids: Sequence[int], rse: str, replaces: str | None = None
) -> None:
    """Record ``rse`` as where the tasks' copy of ``dataset`` is (brokerage reads it)."""
    for task_id, dataset_id in input_datasets(conn, dataset, task_ids):
        if replaces:
            conn.execute(
                delete(task_dataset_rses).where(
                    task_dataset_rses.c.datasetID == dataset_id, task_dataset_rses.c.rse == replaces
                )
            )
        present = conn.execute(
            select(task_dataset_rses.c.rse).where(
                task_dataset_rses.c.datasetID == dataset_id, task_dataset_rses.c.rse == rse[:64]
            )
        ).first()
        if present is None:
            conn.execute(
                task_dataset_rses.insert().values(datasetID=dataset_id, rse=rse[:64], jediTaskID=task_id)
            )


# --- following staging requests ------------------------------------------------------------------


def _release_files(
    conn: Connection, task_id: int, dataset_ids: list[int], on_disk: set[tuple[str, str]], now: dt.datetime
) -> int:
    """Staging files of a task that are now on disk become ready; how many."""
    rows = conn.execute(
        select(task_files.c.fileID, task_files.c.scope, task_files.c.lfn).where(
            task_files.c.jediTaskID == task_id,
            task_files.c.datasetID.in_(dataset_ids),
            task_files.c.status == "staging",
        )
    ).all()
    ids = [int(fid) for fid, scope, lfn in rows if (scope or "", lfn) in on_disk]
    for start in range(0, len(ids), 500):
        conn.execute(
            task_files.update()
            .where(task_files.c.fileID.in_(ids[start : start + 500]), task_files.c.status == "staging")
            .values(status="ready", modificationTime=now)
        )
    return len(ids)


def wake_task(conn: Connection, task_id: int, now: dt.datetime, reason: str) -> bool:
    """A task in ``staging`` with a ready file (or none left staging) becomes ``ready``."""
    task = lock_task(conn, task_id)
    if task is None or task["status"] != T.STAGING:
        return False
    counts: dict[str, int] = dict(
        conn.execute(
            select(task_files.c.status, func.count())
            .where(task_files.c.jediTaskID == task_id, task_files.c.status.in_(("ready", "staging")))
            .group_by(task_files.c.status)
        ).all()
    )
    if not counts.get("ready") and counts.get("staging"):
        return False
    move_task(conn, task, T.READY.value, now, {"errorDialog": None}, reason=reason)
    return True


def check_request(rt: Runtime, request: Request, ddm: DDM | None = None) -> str:
    """Read a staging request's rule and replicas, release the files on disk; what happened."""
    source = ddm or ddm_for(rt)
    now = utcnow()
    assert request.ddm_rule_id and request.destination_rse
    try:
        rule = source.get_rule(request.ddm_rule_id)
    except RuleNotFound:
        with write_tx(rt.engine) as conn:
            end_request(conn, request.request_id, C.CANCELLED, now, rule_unfound=True)
        note_problem(
            rt,
            request.request_id,
            f"rule {request.ddm_rule_id} not found, request cancelled "
            "(an operator may stage it again with data_carousel/change_staging_destination)",
        )
        return "cancelled (rule not found)"
    if rule.state is RuleState.STUCK:
        note_problem(rt, request.request_id, f"rule {rule.id} is stuck: {rule.error or 'no reason given'}")
    replicas = source.list_replicas([request.dataset])
    on_disk = {(r.file.scope, r.file.name) for r in replicas if request.destination_rse in r.rses}
    staged_bytes = sum(r.file.size or 0 for r in replicas if request.destination_rse in r.rses)
    total = request.total_files if request.total_files is not None else len(replicas)
    finished = rule.state is RuleState.OK and len(on_disk) >= total
    released = 0
    with write_tx(rt.engine) as conn:
        current = get_request(conn, request.request_id, lock=True)
        if current is None or current.status != C.STAGING or current.ddm_rule_id != request.ddm_rule_id:
            return "changed concurrently"
        values: dict[str, Any] = {"check_time": now, "modification_time": now}
        if len(on_disk) != (current.staged_files or 0):
            values.update(staged_files=len(on_disk), staged_size=staged_bytes, last_staged_time=now)
        if finished:
            values.update(status=C.DONE.value, end_time=now, staged_size=request.dataset_size or staged_bytes)
        conn.execute(
            requests.update()
            .where(requests.c.request_id == request.request_id, requests.c.status == C.STAGING.value)
            .values(**values)
        )
        waiting = related_tasks(conn, request.request_id, active_only=True)
        by_task: dict[int, list[int]] = {}
        for task_id, dataset_id in input_datasets(conn, request.dataset, waiting):
            by_task.setdefault(task_id, []).append(dataset_id)
        for task_id, dataset_ids in by_task.items():
            got = _release_files(conn, task_id, dataset_ids, on_disk, now)
            released += got
            if got or finished:
                wake_task(
                    conn, task_id, now, f"{len(on_disk)}/{total} files of {request.dataset} staged"[:250]
                )
    if finished:
        try:
            source.update_rule(request.ddm_rule_id, {"lifetime": DONE_LIFETIME})
        except DDMError as exc:
            log.warning("carousel: cannot extend rule %s: %s", request.ddm_rule_id, exc.message)
    state = "done" if finished else f"{len(on_disk)}/{total} on disk"
    return f"{state}, {released} files released"


def note_problem(rt: Runtime, request_id: int, why: str) -> None:
    """Show why a request does not progress: in its parameters, and to the users of its tasks
    (``errorDialog`` of those waiting in staging, which pbook and the monitor show)."""
    now = utcnow()
    with write_tx(rt.engine) as conn:
        request = get_request(conn, request_id, lock=True)
        if request is None or request.params.get("problem") == why[:500]:
            return
        conn.execute(
            requests.update()
            .where(requests.c.request_id == request_id)
            .values(parameters=set_params(request, problem=why[:500]), modification_time=now)
        )
        waiting = related_tasks(conn, request_id, active_only=True)
        if waiting:
            conn.execute(
                tasks.update()
                .where(tasks.c.jediTaskID.in_(waiting), tasks.c.status == T.STAGING.value)
                .values(errorDialog=f"staging {request.dataset} from tape: {why}"[:510], modificationTime=now)
            )


def cancel_orphans(rt: Runtime, ddm: DDM | None = None) -> int:
    """Cancel queued and staging requests whose tasks have all ended; their rules expire."""
    now = utcnow()
    ended: list[Request] = []
    with write_tx(rt.engine) as conn:
        rows = conn.execute(
            select(requests).where(requests.c.status.in_([s.value for s in ACTIVE])).limit(PER_PASS * 5)
        ).mappings()
        for request in [_request(r) for r in rows]:
            if related_tasks(conn, request.request_id, active_only=True):
                continue
            if end_request(conn, request.request_id, C.CANCELLED, now, cancel_reason="no_active_tasks"):
                ended.append(request)
    if ended and any(r.ddm_rule_id for r in ended):
        source = ddm or ddm_for(rt)
        for request in ended:
            expire_rule(source, request.ddm_rule_id)
    return len(ended)


def run_carousel(rt: Runtime, ddm: DDM | None = None) -> dict[str, int]:
    """One pass: cancel unneeded requests, stage queued ones (within the limit), follow staging ones."""
    counts: Counter[str] = Counter()
    with read_tx(rt.engine) as conn:
        pending = conn.execute(
            select(func.count()).where(requests.c.status.in_([s.value for s in ACTIVE]))
        ).scalar_one()
    if not pending:
        return {}
    source = ddm or ddm_for(rt)
    counts["cancelled"] += cancel_orphans(rt, source)
    with read_tx(rt.engine) as conn:
        staging_now = conn.execute(
            select(func.count()).where(requests.c.status == C.STAGING.value)
        ).scalar_one()
        room = max(0, rt.settings.carousel_max_staging - int(staging_now))
        queued = [
            int(r[0])
            for r in conn.execute(
                select(requests.c.request_id)
                .where(requests.c.status == C.QUEUED.value)
                .order_by(requests.c.request_id)
                .limit(min(room, PER_PASS))
            )
        ]
    for request_id in queued:
        ok, why, _ = stage_request(rt, request_id, ddm=source)
        counts["staged" if ok else "not_staged"] += 1
        if not ok:
            log.warning("carousel: request %d not staged: %s", request_id, why)
            note_problem(rt, request_id, f"cannot stage yet: {why}")
    for request in list_requests(rt, status=C.STAGING.value, limit=PER_PASS):
        try:
            result = check_request(rt, request, source)
        except DDMError as exc:
            log.warning("carousel: request %d not checked: %s", request.request_id, exc.message)
            counts["errors"] += 1
            continue
        counts["done" if result.startswith("done") else "checked"] += 1
    return dict(counts)
