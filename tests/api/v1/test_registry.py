"""A v1 method is one declaration: its parameters come from its handler's signature."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from pandawms.api import authz, v1
from pandawms.api.context import RequestContext
from pandawms.api.multipart import UploadedFile
from pandawms.api.params import REQUIRED, Param, bind
from pandawms.api.v1.registry import Result, V1Module, params_of
from pandawms.model.errors import PandaError


def _kinds(func: Any, rest: dict[str, Param] | None = None) -> dict[str, tuple[str, Any, int]]:
    return {name: (p.kind, p.default, p.max_items) for name, p in params_of(func, rest).items()}


def test_kinds_and_defaults_come_from_annotations_and_defaults() -> None:
    def handler(
        ctx: RequestContext,
        *,
        job_id: int,
        label: str | None = None,
        flag: bool = False,
        share: float = 0.5,
        ids: list[int],
        names: list[str] | None = None,
        spec: dict[str, Any],
        anything: Any = None,
        upload: UploadedFile,
        big: Annotated[list[int], Param("int_list", max_items=7)],
        tags: Annotated[list[str], Param("str_list", ["a"])],
        blob: Annotated[Any, Param("json")] = None,
    ) -> Result:
        return True, "", None

    assert _kinds(handler) == {
        "job_id": ("int", REQUIRED, 10000),
        "label": ("str", None, 10000),
        "flag": ("bool", False, 10000),
        "share": ("float", 0.5, 10000),
        "ids": ("int_list", REQUIRED, 10000),
        "names": ("str_list", None, 10000),
        "spec": ("dict", REQUIRED, 10000),
        "anything": ("any", None, 10000),
        "upload": ("file", REQUIRED, 10000),
        "big": ("int_list", REQUIRED, 7),
        "tags": ("str_list", ["a"], 10000),
        "blob": ("json", None, 10000),
    }


def test_a_kwargs_handler_declares_the_rest_once_in_its_decorator() -> None:
    def forwards(ctx: RequestContext, *, timeout: int = 60, **report: object) -> Result:
        return True, "", report

    assert _kinds(forwards, {"site": Param("str")}) == {
        "timeout": ("int", 60, 10000),
        "site": ("str", REQUIRED, 10000),
    }
    with pytest.raises(TypeError, match="exactly when"):
        params_of(forwards)
    with pytest.raises(TypeError, match="signature and in params"):
        params_of(forwards, {"timeout": Param("int")})

    def plain(ctx: RequestContext, *, job_id: int) -> Result:
        return True, "", None

    with pytest.raises(TypeError, match="exactly when"):
        params_of(plain, {"site": Param("str")})


def test_an_annotation_without_a_kind_is_refused_at_declaration() -> None:
    def odd(ctx: RequestContext, *, when: complex) -> Result:
        return True, "", None

    with pytest.raises(TypeError, match="no parameter kind"):
        V1Module("job").get("odd", authz.USER)(odd)

    def twice(ctx: RequestContext, *, n: Annotated[int, Param("int", 3)] = 4) -> Result:
        return True, "", None

    with pytest.raises(TypeError, match="default in its signature and in its Param"):
        params_of(twice)


def test_the_derived_declaration_checks_requests_as_before() -> None:
    kill = v1.METHODS[("job", "kill")]
    assert kill.rule is authz.USER_WRITE and kill.verb == "POST"
    bound = bind(kill.params, {"job_ids": "1,2"}, True)
    assert bound == {"job_ids": [1, 2], "code": None, "use_email_as_id": False, "kill_options": []}
    with pytest.raises(PandaError, match="missing required argument job_ids"):
        bind(kill.params, {}, False)
    with pytest.raises(PandaError, match="unexpected argument"):
        bind(kill.params, {"job_ids": [1], "jobids": [2]}, False)


def test_submissions_declare_their_lane_and_audit_targets() -> None:
    submit = v1.METHODS[("job", "submit")]
    assert submit.submission and submit.targets is not None
    assert submit.targets({"jobs": "[]"}, [[11, "x"], [12, "y"]]) == {"job_ids": [11, 12]}
    task = v1.METHODS[("task", "submit")]
    assert task.submission and task.targets is not None and task.targets({}, 7) == {"task_id": 7}
    assert not any(
        m.submission for k, m in v1.METHODS.items() if k not in {("job", "submit"), ("task", "submit")}
    )
