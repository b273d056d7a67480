"""Property-based fuzzing of the v1 API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid; none may produce a server error,
and the answer must always be the JSON envelope the clients parse.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import ServerProcess

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')"
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(f"sqlite:///{tmp / 'fuzz.sqlite'}", tmp)
    yield server  # type: ignore[misc]
    server.stop()


def test_no_server_errors(fuzz_server: ServerProcess) -> None:
    api = schemathesis.openapi.from_url(fuzz_server.base + "/api/v1/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case) -> None:  # noqa: ANN001
            response = case.call(base_url=fuzz_server.base)
            where = f"{case.method} {case.path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
            body = response.json()
            assert set(body) == {"success", "message", "data"}, (where, body)
            assert isinstance(body["success"], bool) and isinstance(body["message"], str)

        exercise()


def test_the_document_lists_every_method(fuzz_server: ServerProcess) -> None:
    import httpx

    from pandawms.api import v1

    doc = httpx.get(fuzz_server.base + "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {f"/api/v1/{m}/{n}" for (m, n) in v1.METHODS} == set(doc["paths"])
