"""Choosing a task's input files from its datasets (prun's --match, --antiMatch, --nSkipFiles,
--nFiles), and the refusal of a task over a dataset on a server without data management."""

from __future__ import annotations

import pytest

from pandawms.core.runtime import Runtime
from pandawms.core.tasks import commands as tasks
from pandawms.core.tasks.generate import group_by_size
from pandawms.core.tasks.inputs import select_files
from pandawms.core.tasks.params import BadTaskParameter, InputStream, plan_task
from pandawms.ddm import FileInfo
from pandawms.model.identity import Identity

FILES = [FileInfo("s", n, 10) for n in ("b.root", "a.root", "c.root", "x.log.tgz.1", "d.pool")]
PRUN_INPUT = {
    "type": "template",
    "param_type": "input",
    "value": '-i "${IN/T}"',
    "dataset": "s:data.1,s:data.2",
    "exclude": r"\.log\.tgz(\.\d+)*$",
    "expand": True,
}


def _names(files: list[FileInfo]) -> list[str]:
    return [f.name for f in files]


def test_select_files_like_prun_asks() -> None:
    assert _names(select_files(InputStream("s:d", exclude=r"\.log\.tgz(\.\d+)*$"), FILES)) == [
        "a.root",
        "b.root",
        "c.root",
        "d.pool",
    ]
    assert _names(select_files(InputStream("s:d", include=r"\.root$,pool"), FILES)) == [
        "a.root",
        "b.root",
        "c.root",
        "d.pool",
    ]
    assert _names(select_files(InputStream("s:d", include=r"\.root$", offset=1), FILES)) == [
        "b.root",
        "c.root",
    ]
    assert _names(select_files(InputStream("s:d", files=("c.root", "zz")), FILES)) == ["c.root"]


def test_prun_input_item_becomes_input_streams() -> None:
    params = {
        "taskName": "user.jdoe.x/",
        "jobParameters": [{"type": "constant", "value": "-p echo"}, PRUN_INPUT],
        "nFilesPerJob": 3,
        "nFiles": 10,
    }
    plan = plan_task(params, "http://x")
    assert [s.dataset for s in plan.input_streams] == ["s:data.1", "s:data.2"]
    assert plan.inputs == [] and plan.files_per_job == 3 and plan.max_files == 10
    assert plan.template.endswith('-i "${IN/T}"')


def test_n_gb_per_job_groups_files_by_size() -> None:
    params = {
        "taskName": "user.jdoe.x/",
        "jobParameters": [{"type": "constant", "value": "-p echo"}, PRUN_INPUT],
        "nGBPerJob": 2,
    }
    assert plan_task(params, "http://x").gb_per_job == 2
    with pytest.raises(BadTaskParameter, match="nGBPerJob: cannot be given with nFilesPerJob"):
        plan_task({**params, "nFilesPerJob": 2}, "http://x")
    with pytest.raises(BadTaskParameter, match="nGBPerJob: needs an input dataset"):
        plan_task({**params, "jobParameters": params["jobParameters"][:1], "noInput": True}, "http://x")
    with pytest.raises(BadTaskParameter, match="nGBPerJob"):
        plan_task({**params, "nGBPerJob": 0}, "http://x")

    gib = 1024**3
    files = [
        {"lfn": n, "fsize": size} for n, size in (("a", gib), ("b", gib), ("c", 3 * gib), ("d", 1), ("e", 0))
    ]
    assert [[f["lfn"] for f in g] for g in group_by_size(files, 2 * gib)] == [["a", "b"], ["c"], ["d", "e"]]
    many = [{"lfn": str(i), "fsize": 1} for i in range(450)]
    assert [len(g) for g in group_by_size(many, gib)] == [200, 200, 50]


def test_without_ddm_an_input_dataset_is_refused_naming_the_settings(sqlite_rt: Runtime) -> None:
    params = {
        "taskName": "user.jdoe.x/",
        "jobParameters": [{"type": "constant", "value": "-p echo"}, PRUN_INPUT],
    }
    reply = tasks.submit_task(sqlite_rt, params, Identity(dn="/CN=jdoe"))
    assert not reply.success and reply.data == tasks.REFUSED
    assert "task parameter jobParameters[1]" in reply.message
    assert "PANDA_DDM_RUCIO_HOST" in reply.message and "pfnList" in reply.message
