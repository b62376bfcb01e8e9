"""Fuzz the API from its OpenAPI schema (schemathesis): no input makes a 5xx.

The service under fuzz has its own copy of the store, so generated items and behaviours
never reach the other tests' store. Each operation gets ``EXAMPLES`` generated requests
(derandomized: the same ones every run), through the ASGI app in process."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import AUTH, copy_store, make_service
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from moon_rec.loop import ServingArtifacts

EXAMPLES = 30


@pytest.fixture(scope="module")
def api(serving_loop: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serving.app import create_app

    repo = copy_store(serving_loop, tmp_path_factory.mktemp("fuzz"))
    return create_app(make_service(serving_loop, repo, max_candidates=50))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_from_input(api: Any, mode: GenerationMode) -> None:
    from fastapi.testclient import TestClient

    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/rank", "/items", "/search", "/behaviors", "/healthz", "/metrics"} <= paths
    for op in operations:
        if mode == GenerationMode.NEGATIVE and op.method.upper() == "GET":
            continue  # nothing to make invalid in a GET without parameters

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error], headers=AUTH)

        run()
    # the requests did reach the service (counted by /metrics), and none was a 5xx
    metrics = TestClient(api).get("/metrics").text
    assert 'moon_requests_total{endpoint="/rank",status="422"}' in metrics
    assert 'status="5' not in metrics
