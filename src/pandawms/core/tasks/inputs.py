"""The input files of a task over datasets, read from the data management system.

What JEDI's contents feeder does for ``prun --inDS``: list each input dataset's (or container's)
files, keep those the task asked for (``--match``/``--antiMatch`` patterns, ``--nSkipFiles``,
an explicit file list, ``--nFiles``), and hand them to the refiner with their GUIDs, sizes and
checksums, which the pilot needs to stage them in and check them. A blocking network call:
the task manager runs it in its own thread, before it locks the task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pandawms.core.runtime import Runtime
from pandawms.core.tasks.params import MAX_INPUT_FILES, InputStream, TaskPlan
from pandawms.ddm import make_ddm
from pandawms.ddm.interface import DDM, DDMError, FileInfo


@dataclass(frozen=True)
class StreamFiles:
    """One input stream's chosen files, the disk RSEs that hold every one of them, and the tape
    RSEs that do (the data carousel stages from one of those when no disk holds them all).

    ``lost`` names the chosen files of which no replica is left anywhere: they fail (with the
    reason in the task's log) instead of leaving the whole task without a place to run.
    """

    stream: InputStream
    files: list[FileInfo]
    rses: tuple[str, ...]
    tapes: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    @property
    def needs_staging(self) -> bool:
        """On tape only: no disk RSE holds every file, a tape does."""
        return bool(self.files) and not self.rses and bool(self.tapes)


#: Each input stream with the files it contributes, in dataset then file-name order.
InputFiles = list[StreamFiles]


def ddm_for(rt: Runtime) -> DDM:
    """The DDM of this Runtime's settings, made once per runtime (its clients and token cache are reused)."""

    return rt.kept("ddm", lambda: make_ddm(rt.settings))


def _patterns(text: str | None) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in (text or "").split(",") if p]


def select_files(stream: InputStream, files: Sequence[FileInfo]) -> list[FileInfo]:
    """The files of one stream the task uses, in name order."""
    include, exclude = _patterns(stream.include), _patterns(stream.exclude)
    wanted = set(stream.files)
    chosen = [
        f
        for f in sorted(files, key=lambda f: (f.name, f.scope))
        if (not wanted or f.name in wanted)
        and (not include or any(p.search(f.name) for p in include))
        and not any(p.search(f.name) for p in exclude)
    ]
    return chosen[stream.offset :]


def resolve_inputs(rt: Runtime, plan: TaskPlan, ddm: DDM | None = None) -> InputFiles:
    """Every input stream's files, at most ``nFiles`` in all; refuses a task with no file."""
    source = ddm or ddm_for(rt)
    budget = min(plan.max_files or MAX_INPUT_FILES, MAX_INPUT_FILES)
    result: InputFiles = []
    tape: dict[str, bool] = {}
    for stream in plan.input_streams:
        chosen = select_files(stream, source.list_files(stream.dataset))[:budget]
        budget -= len(chosen)
        disks, tapes, lost = _complete_at(source, stream, chosen, tape)
        result.append(StreamFiles(stream, chosen, disks, tapes, lost))
    if not any(s.files for s in result):
        names = ", ".join(s.dataset for s in plan.input_streams)[:300]
        raise NoInputFiles(f"no input file to process in {names} (after --match/--antiMatch/--nSkipFiles)")
    return result


def _complete_at(
    source: DDM, stream: InputStream, files: list[FileInfo], tape: dict[str, bool]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Disk RSEs holding every chosen file of the stream that still has a replica (a job cannot
    read from tape), tape RSEs holding every one, and the names of the chosen files without any
    replica."""
    if not files:
        return (), (), ()
    wanted = {(f.scope, f.name) for f in files}
    where: set[str] | None = None
    found: set[tuple[str, str]] = set()
    for replica in source.list_replicas([stream.dataset]):
        key = (replica.file.scope, replica.file.name)
        if key not in wanted or not replica.rses:
            continue
        found.add(key)
        here = set(replica.rses)
        where = here if where is None else where & here
    lost = tuple(sorted(name for scope, name in wanted - found))
    for rse in sorted(where or ()):
        if rse not in tape:
            tape[rse] = source.rse_info(rse).is_tape
    complete = sorted(where or ())
    return tuple(r for r in complete if not tape[r]), tuple(r for r in complete if tape[r]), lost


class NoInputFiles(DDMError):
    """The input datasets exist but hold no file the task may use."""
