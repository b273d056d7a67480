"""Pilot updates: heartbeats, state changes and the final report, with the back channel.

Every update answers with a ``command`` for the pilot: ``NULL`` when there is nothing to say,
the job's ``commandToPilot`` (``tobekilled`` after a kill), ``tobekilled`` when the pilot holds a
job that is not its to run (unknown PandaID, wrong attemptNr, a job the server already ended),
or ``alreadydone`` when a final report arrives twice.

In strict mode an update is accepted only from the credential the job was dispatched to
(:mod:`pandawms.core.jobs.pilot_binding`); the update carries its caller for that check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, literal, or_, select

from pandawms.core.batching import GroupRunner, one_transaction_or_each
from pandawms.core.jobs import cloning, pilot_binding
from pandawms.core.jobs.commands import consume_once
from pandawms.core.jobs.ddm_outbox import SERVER_HELD
from pandawms.core.jobs.output_report import finalize, prefetch_files
from pandawms.core.jobs.pilot_binding import Caller, NotDispatchedToYou
from pandawms.core.jobs.transitions import deferring, move_job, replace_row
from pandawms.core.runtime import Runtime, utcnow
from pandawms.db.direct import direct_once
from pandawms.db.engine import autocommit_conn, write_tx
from pandawms.db.schema import job_metadata, job_output_reports, job_status_log, jobs, pilot_logs
from pandawms.db.schema_user import job_debug_output
from pandawms.model.errors import StatusCode
from pandawms.model.states import PILOT_REPORTABLE, TERMINAL, JobStatus, is_allowed

TOBEKILLED = "tobekilled"
ALREADYDONE = "alreadydone"
FINAL_REPORTS = ("finished", "failed")

_READ_COLUMNS = (
    "PandaID",
    "jobStatus",
    "attemptNr",
    "commandToPilot",
    "specialHandling",
    "prodSourceLabel",
    "computingSite",
    "modificationHost",
    "startTime",
    "endTime",
    "taskBufferErrorCode",
    "jobDispatcherErrorDiag",
    *cloning.COLUMNS,
    "jobSubStatus",
    *pilot_binding.COLUMNS,
)


@dataclass
class PilotUpdate:
    """One updateJob call, already converted to column names and types."""

    panda_id: int
    state: str
    attempt_nr: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    metadata: str | None = None
    pilot_log: str | None = None
    #: Who sends it (:func:`pandawms.core.jobs.pilot_binding.caller_for`); None: no binding check
    #: (open mode, or the server itself).
    caller: Caller | None = None
    #: Payload output tail a pilot in debug mode sends with its heartbeat.
    stdout: str | None = None


@dataclass(frozen=True)
class UpdateResult:
    """StatusCode and back-channel command for the pilot."""

    status_code: int
    command: str
    job_status: str | None = None


def _command_for(job: dict[str, Any]) -> str:
    parts = []
    handling = (job.get("specialHandling") or "").split(",")
    if "dm" in handling or "debug" in handling:
        parts.append("debug")
    if job.get("commandToPilot"):
        parts.append(job["commandToPilot"])
    return ",".join(parts) if parts else "NULL"


def _store_side_data(conn: Connection, upd: PilotUpdate, now: Any) -> None:
    """Keep the final report, job report (metadata) and pilot log; replace an earlier copy."""
    pid = upd.panda_id
    if upd.state in FINAL_REPORTS:
        row = {"PandaID": pid, "attemptNr": upd.attempt_nr, "jobStatus": upd.state, "data": upd.report}
        replace_row(conn, job_output_reports, {**row, "timeStamp": now})
    if upd.metadata:
        replace_row(conn, job_metadata, {"PandaID": pid, "metaData": upd.metadata})
    if upd.pilot_log:
        replace_row(conn, pilot_logs, {"PandaID": pid, "log": upd.pilot_log, "timeStamp": now})
    if upd.stdout:
        replace_row(conn, job_debug_output, {"PandaID": pid, "stdOut": upd.stdout, "modificationTime": now})


def _decide(job: dict[str, Any], state: str) -> tuple[str | None, str | None]:
    """(target status or None to skip, command overriding the normal one or None)."""
    old = job["jobStatus"]
    final = state in FINAL_REPORTS
    target = JobStatus.HOLDING.value if final else state
    if old in TERMINAL:
        return None, ALREADYDONE if final else TOBEKILLED
    if job.get("jobSubStatus") in SERVER_HELD and old in (JobStatus.HOLDING, JobStatus.TRANSFERRING):
        # The pilot is done with it: the server registers its outputs (or waits for their
        # replication); a repeated final report changes nothing.
        return None, ALREADYDONE if final else None
    if old == JobStatus.HOLDING.value:
        # The pilot said "holding" earlier; its final report now closes the job. Anything
        # else (recovery heartbeats, a late "running") leaves the job as it is.
        return (target, None) if final else (None, None)
    if old == JobStatus.MERGING.value:
        return None, None
    if old == JobStatus.TRANSFERRING.value and state in ("running", "starting"):
        return None, None
    if old == JobStatus.RUNNING.value and state == "starting":
        target = JobStatus.RUNNING.value
    if target == old:
        return target, None
    if not is_allowed(old, target):
        return None, TOBEKILLED
    return target, None


_HEARTBEAT_STATEMENTS: dict[tuple[str, tuple[str, ...], bool, str, str], Any] = {}

#: For each state a one-statement update serves: the statuses it applies to (any other status
#: takes the full path) and the status the job then has, from each of them. A ``running``
#: heartbeat moves a ``starting`` or ``sent`` job to ``running``; ``starting`` moves a ``sent``
#: job to ``starting`` and only writes the columns of a job already ``starting`` or ``running``,
#: as :func:`_decide` says.
_PLAIN_MOVES: dict[str, dict[str, str]] = {
    "running": {"running": "running", "starting": "running", "sent": "running"},
    "starting": {"sent": "starting", "starting": "starting", "running": "running"},
}


def _one_of(column: Any, values: Iterable[str]) -> Any:
    """``column IN (...)`` with one bound parameter per value, fixed when compiled: unlike a
    plain ``in_`` list (expanded at every execution) it can run on the driver's cursor."""
    return column.in_([literal(value) for value in sorted(values)])


def _heartbeat_statement(
    keys: tuple[str, ...], with_attempt: bool, binding: str, backend: str, state: str = "running"
) -> Any:
    """The one-statement update for ``state`` writing ``keys``, built once per set of columns.

    Building the statement and its cache key took more of a worker's CPU than running it
    (py-spy, benchmarks/README.md); pilots send the same few sets of fields, so a handful of
    prebuilt statements with bound parameters serve every heartbeat. ``binding`` (a
    :attr:`Caller.kind`, or empty for none) adds the dispatch binding to the WHERE clause: a
    heartbeat from another credential matches no row and takes the full path, which refuses it.

    On PostgreSQL it is the full path's update as one statement (:data:`_PLAIN_MOVES`): the
    pilot's columns, and for a job that changes status the move (stateChangeTime, startTime
    when it starts running unless the pilot sent it) with its status-log row inserted by the
    same statement (a data-modifying CTE), exactly as :func:`_apply_update` would. The status
    before the move comes from a self-join that locks the row first (``FOR UPDATE``), so it is
    the status the UPDATE changed, not an older snapshot. Elsewhere (SQLite cannot return a
    joined table's columns) only a ``running`` heartbeat of a running job is served here;
    ``backend="simple"`` asks for that small form on PostgreSQL too (tried first there).
    """
    cache_key = (state, keys, with_attempt, binding, backend)
    stmt = _HEARTBEAT_STATEMENTS.get(cache_key)
    if stmt is not None:
        return stmt
    now = bindparam("hb_now", type_=jobs.c.modificationTime.type)
    fused = backend == "postgresql"
    moves = _PLAIN_MOVES[state]
    prev = (
        select(jobs.c.PandaID.label("prev_id"), jobs.c.jobStatus.label("prev_status"))
        .where(jobs.c.PandaID == bindparam("hb_id"))
        .with_for_update()
        .subquery("prev")
    )
    if fused:
        changing = sorted(old for old, new in moves.items() if old != new)
        special = jobs.c.specialHandling
        conditions = [
            jobs.c.PandaID == prev.c.prev_id,
            _one_of(jobs.c.jobStatus, moves),
            # A clone's move to running may take or lose its job set's semaphore
            # (core/jobs/cloning.py): the full path does that, so clones do not move here.
            or_(
                ~_one_of(jobs.c.jobStatus, changing),
                special.is_(None),
                and_(special.not_like("sc:%"), special.not_like("%,sc:%")),
            ),
        ]
    else:
        conditions = [jobs.c.PandaID == bindparam("hb_id"), jobs.c.jobStatus == "running"]
    if with_attempt:
        conditions.append(jobs.c.attemptNr == bindparam("hb_attempt"))
    if binding:
        conditions.append(pilot_binding.where_clause(binding))
    values: dict[str, Any] = {k: bindparam(f"hb_{k}") for k in keys}
    values["modificationTime"] = now
    if not fused:
        stmt = (
            jobs.update()
            .where(*conditions)
            .values(values)
            .returning(jobs.c.commandToPilot, jobs.c.specialHandling)
        )
    else:
        values.update(
            jobStatus=case(
                *[(jobs.c.jobStatus == old, moves[old]) for old in changing], else_=jobs.c.jobStatus
            ),
            stateChangeTime=case((_one_of(jobs.c.jobStatus, changing), now), else_=jobs.c.stateChangeTime),
        )
        starts = sorted(old for old in changing if moves[old] == "running")
        if starts and "startTime" not in keys:
            values["startTime"] = case((_one_of(jobs.c.jobStatus, starts), now), else_=jobs.c.startTime)
        logged = ("PandaID", "prodSourceLabel", "computingSite", "modificationHost", "attemptNr")
        update = (
            jobs.update()
            .where(*conditions)
            .values(values)
            .returning(
                *[jobs.c[c] for c in logged],
                jobs.c.jobStatus,
                jobs.c.commandToPilot,
                jobs.c.specialHandling,
                prev.c.prev_status,
            )
        )
        moved = update.cte("moved")
        log_row = select(
            moved.c.PandaID,
            now,
            moved.c.jobStatus,
            moved.c.prev_status,
            *[moved.c[c] for c in logged[1:]],
            literal(f"pilot reported {state}"),
        ).where(moved.c.prev_status != moved.c.jobStatus)
        columns = ["PandaID", "modificationTime", "jobStatus", "oldStatus", *logged[1:], "reason"]
        insert = job_status_log.insert().from_select(columns, log_row)
        stmt = select(moved).add_cte(insert.cte("logged"))
    if len(_HEARTBEAT_STATEMENTS) < 256:
        _HEARTBEAT_STATEMENTS[cache_key] = stmt
    return stmt


def _execute_heartbeat(
    conn: Connection, shape: tuple[str, tuple[str, ...], bool, str, str], params: dict[str, Any]
) -> Mapping[Any, Any] | None:
    """Run the statement of :func:`_heartbeat_statement` for ``shape`` (state, keys, with_attempt,
    binding, backend); the row it returned, or None.

    On PostgreSQL it runs on the driver's cursor (:mod:`pandawms.db.direct`): a heartbeat is one
    statement, and SQLAlchemy's work around each execution cost more of the worker's CPU than
    the round trip. Elsewhere, or for a shape that cannot run there, through SQLAlchemy.
    """
    state, keys, with_attempt, binding, backend = shape
    direct = direct_once(
        _HEARTBEAT_STATEMENTS,
        ("direct:" + state, keys, with_attempt, binding, backend),
        conn,
        lambda: _heartbeat_statement(keys, with_attempt, binding, backend, state),
        256,
    )
    if direct is not None:
        return direct.first(conn, params)
    stmt = _heartbeat_statement(keys, with_attempt, binding, backend, state)
    return conn.execute(stmt, params).mappings().first()


def _is_plain(rt: Runtime, upd: PilotUpdate) -> bool:
    """An update with nothing but columns that one UPDATE ... RETURNING can serve.

    ``running`` on PostgreSQL and SQLite (MariaDB lacks UPDATE ... RETURNING), ``starting`` on
    PostgreSQL (see :func:`_heartbeat_statement`).
    """
    return (
        (upd.state == "running" or (upd.state == "starting" and rt.backend == "postgresql"))
        and not upd.metadata
        and not upd.pilot_log
        and not upd.stdout
        and rt.backend in ("postgresql", "sqlite")
    )


def _run_plain(conn: Connection, upd: PilotUpdate, now: Any) -> UpdateResult | None:
    keys = tuple(sorted(upd.values))
    caller = upd.caller
    backend = conn.dialect.name
    binding = caller.kind if caller else ""
    with_attempt = upd.attempt_nr is not None
    params = {f"hb_{k}": upd.values[k] for k in keys}
    params.update(hb_id=upd.panda_id, hb_attempt=upd.attempt_nr, hb_now=now)
    if caller is not None:
        params["bind_owner"] = caller.owner[:250]
    row: Mapping[Any, Any] | None = None
    if upd.state == "running" and backend == "postgresql":
        # Most heartbeats find the job running and leave it so: the small UPDATE serves them
        # (the fused statement's lock, CASEs and log CTE cost a quarter of the heartbeat rate);
        # only a job not running yet (its first running report) needs the fused move below.
        row = _execute_heartbeat(conn, (upd.state, keys, with_attempt, binding, "simple"), params)
    if row is None:
        row = _execute_heartbeat(conn, (upd.state, keys, with_attempt, binding, backend), params)
    if row is None:
        return None
    consume_once(conn, upd.panda_id, row["commandToPilot"])
    return UpdateResult(StatusCode.SUCCESS, _command_for(dict(row)), row.get("jobStatus", "running"))


def _plain_heartbeat(rt: Runtime, upd: PilotUpdate, now: Any) -> UpdateResult | None:
    """The common case in one statement: a ``running`` heartbeat for a job that is running.

    ``UPDATE ... WHERE status is running [and attempt matches] RETURNING`` replaces the locked
    read and the write; when it matches no row (any other situation) the caller takes the full
    path.
    """
    if not _is_plain(rt, upd):
        return None
    # One statement, atomic by itself: no BEGIN/COMMIT round trips around it.
    with autocommit_conn(rt.engine) as conn:
        return _run_plain(conn, upd, now)


def _by_panda_id(items: Sequence[tuple[Runtime, PilotUpdate]]) -> list[int]:
    """Positions of ``items`` in PandaID order: every batch locks rows in that one order."""
    return sorted(range(len(items)), key=lambda i: items[i][1].panda_id)


def _plain_batch(_key: Hashable, items: Sequence[tuple[Runtime, PilotUpdate]]) -> list[Any]:
    """Plain heartbeats of many pilots in one transaction (see :mod:`pandawms.core.batching`).

    One statement per heartbeat: one ``UPDATE ... FROM (VALUES ...)`` for the batch was tried
    and dropped, PostgreSQL planned it as a hash join over every running job whenever its
    statistics lagged behind the table. An item the statement does not match gets None (its
    request takes the full path).
    """
    rt = items[0][0]
    now = utcnow()
    order = _by_panda_id(items)
    done = one_transaction_or_each(
        rt.engine,
        [items[i][1] for i in order],
        lambda conn, upd: _run_plain(conn, upd, now),
        lambda upd: _plain_heartbeat(rt, upd, now),
        "heartbeat batch",
    )
    return _in_item_order(order, done)


def _in_item_order(order: list[int], outcomes: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(order)
    for position, outcome in zip(order, outcomes, strict=True):
        out[position] = outcome
    return out


def _new_plain_runner() -> GroupRunner[tuple[Runtime, PilotUpdate], UpdateResult | None]:
    """The group commit of a runtime's plain heartbeats (kept by the runtime)."""
    return GroupRunner(_plain_batch, runtime_of=lambda item: item[0])


def update_job(rt: Runtime, upd: PilotUpdate, fast: bool = True) -> UpdateResult:
    """Apply one pilot update in one transaction and say what the pilot should do next.

    ``fast=False`` skips the plain-heartbeat statement (the caller already tried it).
    """
    if upd.state not in PILOT_REPORTABLE:
        return UpdateResult(StatusCode.INVALID, "NULL")
    now = utcnow()
    plain = _plain_heartbeat(rt, upd, now) if fast else None
    if plain is not None:
        return plain
    with write_tx(rt.engine) as conn:
        return _apply_update(conn, rt, upd, now)


def _locked_rows(conn: Connection, rt: Runtime, panda_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The rows the update path reads, locked (``FOR UPDATE`` outside SQLite), in PandaID order.

    SQLite needs no row lock: the write transaction holds the database from BEGIN.
    """
    stmt = (
        select(*[jobs.c[c] for c in _READ_COLUMNS])
        .where(jobs.c.PandaID.in_(sorted(set(panda_ids))))
        .order_by(jobs.c.PandaID)
    )
    if rt.backend != "sqlite":
        stmt = stmt.with_for_update()
    return {int(row["PandaID"]): dict(row) for row in conn.execute(stmt).mappings()}


def _apply_update(
    conn: Connection,
    rt: Runtime,
    upd: PilotUpdate,
    now: Any,
    prefetched: dict[int, dict[str, Any]] | None = None,
) -> UpdateResult:
    """The full update path inside the caller's transaction (locked read, decide, write).

    ``prefetched``: rows a batch already read and locked for all its items at once; an item
    takes its job's row out, so a second update of the same job in the batch reads it again
    (with the first one's changes).
    """
    if prefetched is not None and upd.panda_id in prefetched:
        job = prefetched.pop(upd.panda_id)
    else:
        found = _locked_rows(conn, rt, [upd.panda_id])
        if not found:
            return UpdateResult(StatusCode.SUCCESS, TOBEKILLED)
        job = found[upd.panda_id]
    # Before anything is written: a refusal leaves the transaction (and a batch) untouched.
    pilot_binding.check(job, upd.caller)
    if upd.attempt_nr is not None and job["attemptNr"] is not None and upd.attempt_nr != job["attemptNr"]:
        return UpdateResult(StatusCode.SUCCESS, TOBEKILLED, job["jobStatus"])
    target, override = _decide(job, upd.state)
    if target is None:
        if not override:
            consume_once(conn, upd.panda_id, job["commandToPilot"])
        return UpdateResult(StatusCode.SUCCESS, override or _command_for(job), job["jobStatus"])
    clone_mode = cloning.mode_of(job.get("specialHandling"))
    if clone_mode is not None:
        lost = _lost_clone(conn, job, upd, target, clone_mode, now)
        if lost is not None:
            return lost
    values = dict(upd.values)
    if (
        target == JobStatus.RUNNING.value
        and job["jobStatus"] in ("sent", "starting")
        and "startTime" not in values
    ):
        values["startTime"] = now
    if target == JobStatus.HOLDING.value and "endTime" not in values:
        values["endTime"] = now
    if target in ("holding", "transferring") and upd.state == target:
        values["jobDispatcherErrorDiag"] = f"set to {target} by the pilot at {now:%Y-%m-%d %H:%M:%S}"
    reason = f"pilot reported {upd.state}"
    status = target
    if upd.state in FINAL_REPORTS:
        # Through holding to the final state in one statement (output_report.finalize).
        status = finalize(
            conn,
            job,
            upd.state,
            upd.report,
            now,
            values,
            reason,
            rt.retry_rules,
            register=bool(rt.settings.ddm_rucio_host),
        )
        job.update(values)
        # A clone whose outputs wait for registration (holding) keeps its semaphore until then.
        if clone_mode is not None and status != JobStatus.HOLDING.value:
            cloning.after_final(conn, job, status, now)
    elif target == job["jobStatus"]:
        values["modificationTime"] = now
        conn.execute(jobs.update().where(jobs.c.PandaID == upd.panda_id).values(**values))
    else:
        move_job(conn, job, target, now, values, reason=reason)
    _store_side_data(conn, upd, now)
    consume_once(conn, upd.panda_id, job.get("commandToPilot"))
    return UpdateResult(StatusCode.SUCCESS, _command_for(job), status)


def _lost_clone(
    conn: Connection, job: dict[str, Any], upd: PilotUpdate, target: str, mode: str, now: Any
) -> UpdateResult | None:
    """End a clone that did not get its jobset's semaphore (:mod:`pandawms.core.jobs.cloning`).

    ``runonce``: taken when a clone starts running; ``storeonce``: when one finishes. None when
    this clone holds it (or the moment is not one that takes it).
    """
    starts = (
        mode == cloning.RUNONCE
        and target == JobStatus.RUNNING.value
        and job["jobStatus"] in ("sent", "starting")
    )
    # Finishing takes it in both modes (runonce: a clone that never reported running).
    stores = upd.state == "finished"
    if not (starts or stores):
        return None
    winner = cloning.take_semaphore(conn, job, now)
    if winner == job["PandaID"]:
        return None
    _store_side_data(conn, upd, now)
    cloning.close_loser(conn, job, winner, now)
    return UpdateResult(StatusCode.SUCCESS, TOBEKILLED, JobStatus.CLOSED.value)


def _full_batch(_key: Hashable, items: Sequence[tuple[Runtime, PilotUpdate]]) -> list[Any]:
    """State changes and final reports of many pilots in one transaction, in PandaID order."""
    rt = items[0][0]
    now = utcnow()
    order = _by_panda_id(items)
    updates = [items[i][1] for i in order]
    rows: dict[int, dict[str, Any]] = {}

    @contextlib.contextmanager
    def batch_work(conn: Connection) -> Iterator[None]:
        # One locked read of every job of the batch, and the status-log rows and reports of
        # the whole batch written at its end (one statement per table), in its transaction.
        rows.update(_locked_rows(conn, rt, [upd.panda_id for upd in updates]))
        with deferring(conn):
            prefetch_files(conn, {upd.panda_id for upd in updates if upd.state in FINAL_REPORTS} & set(rows))
            yield

    done = one_transaction_or_each(
        rt.engine,
        updates,
        lambda conn, upd: _refusal_as_outcome(conn, rt, upd, now, rows),
        lambda upd: update_job(rt, upd, fast=False),
        "update batch",
        around=batch_work,
    )
    return _in_item_order(order, done)


def _refusal_as_outcome(
    conn: Connection, rt: Runtime, upd: PilotUpdate, now: Any, prefetched: dict[int, dict[str, Any]]
) -> Any:
    """:func:`_apply_update` in a batch; a binding refusal is this item's outcome.

    The refusal comes before the item wrote anything, so the batch carries on instead of
    rolling back and rerunning every item alone.
    """
    try:
        return _apply_update(conn, rt, upd, now, prefetched)
    except NotDispatchedToYou as exc:
        return exc


def _new_full_runner() -> GroupRunner[tuple[Runtime, PilotUpdate], UpdateResult]:
    """The group commit of a runtime's state changes and final reports (kept by the runtime)."""
    return GroupRunner(_full_batch, runtime_of=lambda item: item[0])


async def update_job_grouped(rt: Runtime, upd: PilotUpdate) -> UpdateResult:
    """:func:`update_job` from the event loop, through the worker's group commit.

    A plain heartbeat (or, on PostgreSQL, a ``starting`` update) joins a batch of
    one-statement updates; anything else, or an update that statement does not match, joins a
    batch of full updates. Row locks, taken in PandaID order, keep two batches apart on the
    client-server databases, so two full batches run at once there (plain ones, each a few
    milliseconds, one at a time); SQLite's single writer gains nothing from a second.
    """
    if upd.state not in PILOT_REPORTABLE:
        return UpdateResult(StatusCode.INVALID, "NULL")
    parallel = 1 if rt.backend == "sqlite" else 2
    if _is_plain(rt, upd):
        # One plain batch at a time: two at once cost more CPU per heartbeat than they gained
        # on two cores (benchmarks/README.md).
        plain = await rt.kept("heartbeat.plain_group_commit", _new_plain_runner).submit("plain", (rt, upd))
        if plain is not None:
            return plain
    runner = rt.kept("heartbeat.full_group_commit", _new_full_runner)
    return await runner.submit("full", (rt, upd), parallel)
