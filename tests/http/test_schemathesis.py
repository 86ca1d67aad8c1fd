"""A bounded schemathesis run against /openapi.json through the falcon WSGI app: for every
documented operation, schema-valid (positive) and schema-invalid (negative) requests never give
a 5xx, and every response has a documented status, content type and body shape."""

from __future__ import annotations

from typing import Any

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow  # the inner loop (make quick) leaves these to make test

OPERATIONS = [
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("GET", "/health"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def schema(client: falcon.testing.TestClient) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", client.app)


def test_every_documented_operation_is_fuzzed(schema: Any) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert documented == set(OPERATIONS)


# Negative cases need something to break: only the POST bodies have a schema to violate (the
# GETs take nothing, or a free string in the path).
RUNS = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"
]


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_operation_conforms(schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = schema[path][method]

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    run()
