"""Hyperparameter-optimisation checkpoints: files Harvester keeps for a task's HPO workers.

Harvester uploads ``<jediTaskID>_<subID>`` (``file_server/upload_hpo_checkpoint``), later
fetches it from ``/cache/hpo_cp_<jediTaskID>_<subID>`` and finally removes it
(``file_server/delete_hpo_checkpoint``). The files sit in the cache directory under that name,
written whole under a temporary name and renamed into place (a reader never sees half a file; a
new upload of the same point replaces the old one, as on the real server). Names are built from
checked parts only, so no argument can point outside the cache directory. Harvester (production)
may write any task's checkpoints; a user only those of their own task, so nobody can replace
another user's points. The cleaner removes
checkpoints nobody replaced for ``cache_lifetime`` seconds.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

from pandawms.core.files import cache_dir, check_name
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.read import task_row
from pandawms.db.engine import read_tx
from pandawms.model.errors import Forbidden, NotFound, PandaError, TooLarge
from pandawms.model.identity import Identity
from pandawms.model.ownership import may_act

PREFIX = "hpo_cp_"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+\-]{0,63}$")
_TMP_PREFIX = ".hpo-"


def _part(what: str, value: str) -> str:
    if not _PART.match(value) or ".." in value:
        raise PandaError(
            f"Argument error: {what} {value[:40]!r} is not allowed (letters, digits, . + - only)"
        )
    return value


def file_name(task_id: str, sub_id: str) -> str:
    """``hpo_cp_<task>_<sub>``: the cache name of one checkpoint."""
    return check_name(f"{PREFIX}{_part('task_id', task_id)}_{_part('sub_id', sub_id)}")


def ids_from_upload(upload_name: str) -> tuple[str, str]:
    """(task ID, sub ID) from the uploaded file's name ``<task>_<sub>`` (its last path part)."""
    parts = upload_name.replace("\\", "/").split("/")[-1].split("_")
    if len(parts) != 2:
        raise PandaError("Failed to extract task and sub IDs")
    return parts[0], parts[1]


def _check_writer(rt: Runtime, who: Identity, task_id: str) -> None:
    """Production, or the owner of the task ``task_id`` names (open mode: anyone)."""
    open_mode = rt.settings.auth_mode == "open"
    if open_mode or who.is_production:
        return
    task = None
    if task_id.isdigit() and len(task_id) < 19:
        with read_tx(rt.engine) as conn:
            task = task_row(conn, int(task_id))
    if task is None or not may_act(who, task, open_mode):
        raise Forbidden(f"not the owner of task {task_id[:40]} or no production role")


def store(rt: Runtime, who: Identity, upload_name: str, data: bytes) -> Path:
    """Write a checkpoint into the cache; its path."""
    limit = rt.settings.hpo_checkpoint_max_bytes
    if len(data) > limit:
        raise TooLarge(f"Exceeded size limit {len(data)}>{limit}")
    task_id, sub_id = ids_from_upload(upload_name)
    _check_writer(rt, who, task_id)
    directory = cache_dir(rt.settings)
    final = directory / file_name(task_id, sub_id)
    temp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return final


def delete(rt: Runtime, who: Identity, task_id: str, sub_id: str) -> None:
    """Remove a checkpoint; NotFound when there is none."""
    _check_writer(rt, who, task_id)
    path = cache_dir(rt.settings) / file_name(task_id, sub_id)
    try:
        path.unlink()
    except FileNotFoundError:
        raise NotFound(f"Failed to delete file due to: no checkpoint {path.name}") from None


def expire(rt: Runtime) -> int:
    """Remove checkpoints (and dead temporary files) older than ``cache_lifetime``; how many went."""
    directory = cache_dir(rt.settings)
    cutoff = time.time() - rt.settings.cache_lifetime
    stale_tmp = time.time() - 3600
    removed = 0
    for pattern, limit in ((PREFIX + "*", cutoff), (_TMP_PREFIX + "*", stale_tmp)):
        for path in directory.glob(pattern):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    removed += pattern.startswith(PREFIX)
            except OSError:
                continue
    return removed
