"""JobSpec/FileSpec as the clients send and read them.

In: panda-client's JSON "state list", one positional list per job (attribute order of
:data:`JOB_ATTRIBUTE_NAMES`, then the list of files, each positional too). Out: the dict form
``job/get_description`` answers, every attribute by name plus ``Files``.
"""

from __future__ import annotations

from typing import Any

from pandawms.model.errors import PandaError
from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ATTRIBUTE_NAMES, JOB_ZERO_ATTRIBUTES

_N_JOB = len(JOB_ATTRIBUTE_NAMES)


def decode_state_list(jobs: Any) -> list[dict[str, Any]]:
    """Positional job lists -> attribute dicts with ``Files``; raw values, typed later by the core.

    Shorter lists are accepted (attributes are only ever appended); the last element of each
    job is always its file list. A dict per job (the named form) is accepted as well.
    """
    if not isinstance(jobs, list):
        raise PandaError("jobs must be a JSON list of jobs")
    decoded: list[dict[str, Any]] = []
    for index, state in enumerate(jobs):
        if isinstance(state, dict):
            decoded.append(_decode_named(index, state))
            continue
        if not isinstance(state, list) or not state:
            raise PandaError(
                f"job {index}: a job must be a list of {_N_JOB} attributes followed by its files"
            )
        *values, raw_files = state
        if len(values) > _N_JOB:
            # Only the real server's internal _changedAttrs can sit here; ignore extras beyond our table.
            values = values[:_N_JOB]
        if not isinstance(raw_files, list):
            raise PandaError(f"job {index}: the last element must be the list of files")
        job = dict(zip(JOB_ATTRIBUTE_NAMES, values, strict=False))
        files = []
        for f_index, raw_file in enumerate(raw_files):
            if isinstance(raw_file, dict):
                files.append(raw_file)
            elif isinstance(raw_file, list):
                files.append(dict(zip(FILE_ATTRIBUTE_NAMES, raw_file, strict=False)))
            else:
                raise PandaError(f"job {index} file {f_index}: a file must be a list of attributes")
        job["Files"] = files
        decoded.append(job)
    return decoded


def _decode_named(index: int, state: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(state) - set(JOB_ATTRIBUTE_NAMES) - {"Files"})
    if unknown:
        raise PandaError(f"job {index}: unknown attribute(s) {', '.join(unknown[:5])}")
    files = state.get("Files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise PandaError(f"job {index}: Files must be a list of objects")
    return dict(state)


def encode_job(job: dict[str, Any]) -> dict[str, Any]:
    """A stored job in the dict form panda-client's ``JobSpec.load_from_dict`` reads."""
    out: dict[str, Any] = {}
    for name in JOB_ATTRIBUTE_NAMES:
        value = job.get(name)
        if value is None and name in JOB_ZERO_ATTRIBUTES:
            value = 0
        out[name] = value
    out["Files"] = [{name: f.get(name) for name in FILE_ATTRIBUTE_NAMES} for f in job.get("Files", [])]
    return out
