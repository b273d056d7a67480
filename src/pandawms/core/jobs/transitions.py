"""The one place a job's status changes.

:func:`move_jobs` checks every move against :data:`pandawms.model.states.ALLOWED_MOVES`,
writes the new status with a guard on the old one (so a concurrent change is detected, not
overwritten), stamps stateChangeTime and modificationTime, and writes the status log, all in
the caller's transaction. An illegal or lost move raises, which rolls the whole transaction
back: a refused change changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam

from pandawms.db.bulk import insert_rows
from pandawms.db.direct import direct_once
from pandawms.db.schema import job_status_log, jobs
from pandawms.model.errors import Conflict
from pandawms.model.states import check_move

#: Columns every caller of move_jobs must have read for each job.
MOVE_COLUMNS = ("PandaID", "jobStatus", "prodSourceLabel", "computingSite", "attemptNr", "modificationHost")


class ConcurrentChange(Conflict):
    """Another request changed the job between our read and our write."""

    def __init__(self, panda_ids: Iterable[int]) -> None:
        ids = ", ".join(str(i) for i in sorted(panda_ids))
        super().__init__(f"job(s) {ids} changed concurrently; try again")


class DeferredWrites:
    """Rows a batch of updates writes at the end of its shared transaction, one statement each.

    Within one group-commit batch every state change used to insert its own status-log row and
    replace its own reports (a DELETE and an INSERT per table): three to eight round trips per
    job. Collected here, they become one multi-row INSERT into the status log and one DELETE +
    one INSERT per side table for the whole batch, still in the batch's transaction, so they
    commit (or roll back) with the state changes they belong to. Replacements are kept per
    PandaID, the last one winning, as the one-by-one DELETE and INSERT would leave them.
    """

    def __init__(self) -> None:
        self.status_log: list[dict[str, Any]] = []
        self.replace: dict[Table, dict[int, dict[str, Any]]] = {}
        #: Rows to update by primary key, per (table, key column, columns written): one
        #: ``executemany`` each at the end (psycopg sends it as one pipeline).
        self.updates: dict[tuple[Table, str, tuple[str, ...]], dict[Any, dict[str, Any]]] = {}
        #: Rows read once for the whole batch (say, the files of every job with a final report),
        #: per PandaID; whoever uses a job's rows takes them out, so a second use reads again.
        self.prefetched: dict[str, dict[int, list[dict[str, Any]]]] = {}

    def flush(self, conn: Connection) -> None:
        """Write what was collected (called once, before the commit)."""
        for (table, key, columns), by_key in self.updates.items():

            def make(table: Table = table, key: str = key, columns: tuple[str, ...] = columns) -> Any:
                return (
                    table.update()
                    .where(table.c[key] == bindparam("u_key"))
                    .values({c: bindparam(f"u_{c}") for c in columns})
                )

            rows = [{"u_key": k, **{f"u_{c}": by_key[k][c] for c in columns}} for k in sorted(by_key)]
            direct = direct_once(_MOVE_EACH, (("direct", "update", table.name, key), columns), conn, make, 64)
            if direct is not None:
                direct.many(conn, rows)  # no SQLAlchemy work per row: a batch has hundreds of files
            else:
                conn.execute(make(), rows)
        for table, replaced in self.replace.items():
            conn.execute(table.delete().where(table.c.PandaID.in_(sorted(replaced))))
            _insert_all(conn, table, [replaced[pid] for pid in sorted(replaced)])
        if self.status_log:
            _insert_all(conn, job_status_log, self.status_log)
        self.updates.clear()
        self.replace.clear()
        self.status_log.clear()
        self.prefetched.clear()


#: Fewest rows written with COPY: it takes two round trips (a multi-row INSERT one), which only
#: pays off once SQLAlchemy's work per row is the larger cost.
COPY_FROM_ROWS = 20


def _insert_all(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``: with COPY on PostgreSQL when they are many and all have the same columns
    (one statement, no SQLAlchemy work per row), as an executemany INSERT otherwise."""
    names = tuple(rows[0])
    if len(rows) >= COPY_FROM_ROWS and all(
        len(row) == len(names) and all(name in row for name in names) for row in rows
    ):
        insert_rows(conn, table, rows, names)
    else:
        conn.execute(table.insert(), rows)


#: Where :func:`deferring` keeps the batch's collector while its transaction runs.
_DEFERRED_KEY = "pandawms_deferred_writes"


@contextlib.contextmanager
def deferring(conn: Connection) -> Iterator[DeferredWrites]:
    """Collect status-log rows and report replacements made on ``conn``; write them on exit.

    On an exception nothing is written (the transaction is rolled back anyway).
    """
    writes = DeferredWrites()
    conn.info[_DEFERRED_KEY] = writes
    try:
        yield writes
        conn.info.pop(_DEFERRED_KEY, None)
        writes.flush(conn)
    finally:
        conn.info.pop(_DEFERRED_KEY, None)


def deferred_writes(conn: Connection) -> DeferredWrites | None:
    """The collector of the batch running on ``conn``, or None when writes go out at once."""
    found = conn.info.get(_DEFERRED_KEY)
    return found if isinstance(found, DeferredWrites) else None


def replace_row(conn: Connection, table: Table, row: dict[str, Any]) -> None:
    """Replace ``table``'s row of ``row["PandaID"]`` (now, or at the end of the batch)."""
    writes = deferred_writes(conn)
    if writes is not None:
        writes.replace.setdefault(table, {})[int(row["PandaID"])] = row
        return
    conn.execute(table.delete().where(table.c.PandaID == row["PandaID"]))
    conn.execute(table.insert().values(**row))


def update_row(conn: Connection, table: Table, key: str, key_value: Any, values: dict[str, Any]) -> None:
    """``UPDATE table SET values WHERE key = key_value`` now, or with its likes at the end of the batch.

    Deferred only where nothing later in the batch reads the row back; a later update of the
    same row with the same columns replaces the earlier one, as running both would.
    """
    writes = deferred_writes(conn)
    if writes is None:
        conn.execute(table.update().where(table.c[key] == key_value).values(**values))
        return
    columns = tuple(sorted(values))
    writes.updates.setdefault((table, key, columns), {})[key_value] = values


def log_statuses(
    conn: Connection,
    entries: Iterable[Mapping[str, Any]],
    new_status: str | None,
    now: dt.datetime,
    reason: str | None = None,
    bulk: bool = False,
) -> None:
    """Append status-log rows; ``new_status`` None means each entry's own jobStatus (creation).

    ``bulk``: many rows (a submission), written at once with :func:`pandawms.db.bulk.insert_rows`.
    """
    rows = [
        {
            "PandaID": job["PandaID"],
            "modificationTime": now,
            "jobStatus": new_status or job["jobStatus"],
            "oldStatus": job["jobStatus"] if new_status else None,
            "prodSourceLabel": job.get("prodSourceLabel"),
            "computingSite": job.get("computingSite"),
            "modificationHost": job.get("modificationHost"),
            "attemptNr": job.get("attemptNr"),
            "reason": (reason or "")[:250] or None,
        }
        for job in entries
    ]
    if not rows:
        return
    writes = deferred_writes(conn)
    if writes is not None:
        writes.status_log.extend(rows)
    elif bulk:
        insert_rows(conn, job_status_log, rows, list(rows[0]))
    else:
        names = tuple(rows[0])
        direct = direct_once(
            _MOVE_EACH,
            (("direct", "status_log"), names),
            conn,
            lambda: job_status_log.insert().values({name: bindparam(f"l_{name}") for name in names}),
            64,
        )
        if direct is not None:
            direct.many(conn, [{f"l_{name}": row[name] for name in names} for row in rows])
        else:
            conn.execute(job_status_log.insert(), rows)


def move_jobs(
    conn: Connection,
    current: Iterable[Mapping[str, Any]],
    new_status: str,
    now: dt.datetime,
    values: Mapping[str, Any] | None = None,
    reason: str | None = None,
    per_job: Mapping[int, Mapping[str, Any]] | None = None,
) -> int:
    """Move every job in ``current`` (rows with :data:`MOVE_COLUMNS`) to ``new_status``.

    ``values`` are extra columns written with the move; ``per_job`` adds columns that differ
    from job to job (keyed by PandaID; every entry must have the same keys), written in one
    more statement. Returns the number of jobs moved.
    """
    by_old: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for job in current:
        check_move(job["jobStatus"], new_status, job["PandaID"])
        by_old[job["jobStatus"]].append(job)
    moved = 0
    extra = per_job or {}
    for old, group in by_old.items():
        ids = [job["PandaID"] for job in group]
        update = {**(values or {}), "jobStatus": new_status, "stateChangeTime": now, "modificationTime": now}
        if all(i in extra for i in ids) and (len(ids) == 1 or conn.dialect.supports_sane_multi_rowcount):
            count = _move_each(conn, ids, old, update, extra)
        else:
            count = _move_together(conn, ids, old, update, extra)
        if count != len(ids):
            raise ConcurrentChange(ids)
        log_statuses(
            conn,
            [{**job, **(values or {}), **extra.get(job["PandaID"], {})} for job in group],
            new_status,
            now,
            reason,
        )
        moved += count
    return moved


def _move_together(
    conn: Connection, ids: list[int], old: str, update: dict[str, Any], extra: Mapping[int, Mapping[str, Any]]
) -> int:
    """One guarded UPDATE for the whole group, then the per-job columns (one executemany)."""
    count = int(
        conn.execute(
            jobs.update().where(and_(jobs.c.PandaID.in_(ids), jobs.c.jobStatus == old)).values(**update)
        ).rowcount
    )
    if count == len(ids):
        rows = [{"b_id": i, **{f"b_{k}": v for k, v in extra[i].items()}} for i in ids if i in extra]
        if rows:
            keys = [k[2:] for k in rows[0] if k != "b_id"]
            conn.execute(
                jobs.update()
                .where(jobs.c.PandaID == bindparam("b_id"))
                .values(**{k: bindparam(f"b_{k}") for k in keys}),
                rows,
            )
    return count


_MOVE_EACH: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}


def _move_each(
    conn: Connection, ids: list[int], old: str, update: dict[str, Any], extra: Mapping[int, Mapping[str, Any]]
) -> int:
    """The move and every job's own columns in one guarded UPDATE per job, sent as one executemany.

    Dispatch writes each pilot's node, CE and scheduler ID with the move: writing them in the
    same UPDATE saves the database a second version of every row and the server a round trip.
    (A ``CASE "PandaID" WHEN ...`` per column in one statement was tried before: 3.4 times slower
    to build than the executemany.) Returns the number of rows moved, summed over the jobs.
    """
    shared = tuple(sorted(update))
    own = tuple(sorted(extra[ids[0]]))
    stmt = _MOVE_EACH.get((shared, own))
    if stmt is None:
        stmt = (
            jobs.update()
            .where(jobs.c.PandaID == bindparam("m_id"), jobs.c.jobStatus == bindparam("m_old"))
            .values({k: bindparam(f"m_{k}") for k in (*shared, *own)})
        )
        if len(_MOVE_EACH) < 64:
            _MOVE_EACH[(shared, own)] = stmt
    common = {f"m_{k}": v for k, v in update.items()}
    rows = [
        {**common, "m_id": i, "m_old": old, **{f"m_{k}": v for k, v in extra[i].items()}} for i in sorted(ids)
    ]
    direct = direct_once(_MOVE_EACH, (("direct", "move", *shared), own), conn, lambda: stmt, 64)
    if direct is not None:
        return direct.many(conn, rows)
    return int(conn.execute(stmt, rows).rowcount)


def move_job_via(
    conn: Connection,
    job: Mapping[str, Any],
    via: str,
    new_status: str,
    now: dt.datetime,
    via_values: Mapping[str, Any],
    values: Mapping[str, Any],
    via_reason: str,
    reason: str,
) -> None:
    """Move ``job`` to ``via`` and on to ``new_status`` in one guarded UPDATE.

    Both moves are checked and both are in the status log (``via`` written with
    ``via_values``, then ``new_status`` with ``values`` on top), exactly as two
    :func:`move_job` calls would leave the job, with one round trip less: a pilot's final
    report passes ``holding`` on its way to ``finished`` or ``failed`` within one transaction.
    """
    panda_id = job["PandaID"]
    old = job["jobStatus"]
    if old == via:
        move_job(conn, job, new_status, now, {**via_values, **values}, reason)
        return
    check_move(old, via, panda_id)
    check_move(via, new_status, panda_id)
    update = {
        **via_values,
        **values,
        "jobStatus": new_status,
        "stateChangeTime": now,
        "modificationTime": now,
    }
    count = conn.execute(
        jobs.update().where(jobs.c.PandaID == panda_id, jobs.c.jobStatus == old).values(**update)
    ).rowcount
    if count != 1:
        raise ConcurrentChange([panda_id])
    first = {**job, **via_values}
    log_statuses(conn, [first], via, now, via_reason)
    log_statuses(conn, [{**first, "jobStatus": via, **values}], new_status, now, reason)


def move_job(
    conn: Connection,
    job: Mapping[str, Any],
    new_status: str,
    now: dt.datetime,
    values: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """:func:`move_jobs` for one job."""
    move_jobs(conn, [job], new_status, now, values, reason)
