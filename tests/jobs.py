"""Building jobs for tests the way the real clients send them."""

from __future__ import annotations

from typing import Any

from pandawms.model.jobspec import FILE_ATTRIBUTE_NAMES, JOB_ATTRIBUTE_NAMES


def make_job(
    site: str | None = "TEST_SITE", files: list[dict[str, Any]] | None = None, **attrs: Any
) -> dict[str, Any]:
    """A job as an attribute dict (``Files`` included), with a user-analysis flavour by default."""
    job: dict[str, Any] = {
        "jobDefinitionID": 1,
        "jobName": "test-job",
        "transformation": "http://pandaserver-doma.cern.ch:25080/trf/user/hello.sh",
        "prodSourceLabel": "user",
        "assignedPriority": 1000,
        "currentPriority": 1000,
        "computingSite": site,
        "jobParameters": "echo hello",
        "VO": "atlas",
    }
    job.update(attrs)
    job["Files"] = files if files is not None else []
    return job


def make_file(lfn: str, type_: str = "output", **attrs: Any) -> dict[str, Any]:
    """A file attribute dict."""
    return {
        "lfn": lfn,
        "type": type_,
        "dataset": "user.test.ds",
        "destinationDBlock": "user.test.ds",
        **attrs,
    }


def state_list(job: dict[str, Any]) -> list[Any]:
    """The positional JSON state list panda-client 2.2.0 sends for ``job`` ("NULL" when unset)."""
    values = [job.get(name, "NULL") if job.get(name) is not None else "NULL" for name in JOB_ATTRIBUTE_NAMES]
    files = [
        [f.get(name, "NULL") if f.get(name) is not None else "NULL" for name in FILE_ATTRIBUTE_NAMES] + [None]
        for f in job.get("Files", [])
    ]
    return [*values, files]
