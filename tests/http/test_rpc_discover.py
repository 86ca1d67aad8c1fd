"""`rpc.discover` describes what the server really does: every method's params and result have
schemas, and real requests and responses validate against them (as /openapi.json's do)."""

from __future__ import annotations

from typing import Any

import falcon.testing
import jsonschema
import pytest

from tests.http.test_rpc import call

DOCS = [{"id": "a", "text": "Paris is in France."}, {"id": 7, "text": "Bananas are yellow."}]
# Every method with params it accepts, by name and by position.
CALLS: list[tuple[str, Any]] = [
    ("health", None),
    ("status", None),
    ("models.list", None),
    ("models.describe", None),
    ("mem_info", None),
    ("ort_info", None),
    ("embed", {"texts": ["hello", "world"], "quality": 2}),  # INT8: int8 + scale
    ("embed", {"texts": ["hello"], "quality": 4}),  # FP32: fp16
    ("embed", {"texts": ["hello"], "model": "all-minilm-l6-v2", "format": "float"}),
    ("embed", [["hello", "world"], 1]),  # the seed's example, positional
    ("rerank", {"query": "France?", "docs": DOCS, "top_k": 1}),
    ("rerank", ["France?", DOCS, 5]),  # the seed's example, positional
    ("rpc.discover", None),
]


@pytest.fixture(scope="module")
def methods(client: falcon.testing.TestClient) -> dict[str, dict[str, Any]]:
    doc = call(client, "rpc.discover")["result"]
    return {m["name"]: m for m in doc["methods"]}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def test_every_method_has_a_result_schema(methods: dict[str, dict[str, Any]]) -> None:
    assert {name for name, _ in CALLS} == set(methods)
    for m in methods.values():
        schema = m["result"]["schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema != {"type": "object"}, f"{m['name']} has only a placeholder result schema"
        for p in m["params"]:
            jsonschema.Draft202012Validator.check_schema(p["schema"])


@pytest.mark.parametrize(("method", "params"), CALLS)
def test_real_responses_validate(
    client: falcon.testing.TestClient,
    methods: dict[str, dict[str, Any]],
    method: str,
    params: Any,
) -> None:
    spec = methods[method]
    if params is not None:
        named = (
            params
            if isinstance(params, dict)
            else dict(zip([p["name"] for p in spec["params"]], params, strict=False))
        )
        for p in spec["params"]:
            if p["name"] in named:
                validate(named[p["name"]], p["schema"])
            else:
                assert not p["required"], f"{method} example lacks required {p['name']}"
    body = call(client, method, params)
    assert "result" in body, f"{method} answered {body}"
    validate(body["result"], spec["result"]["schema"])


def test_the_schema_rejects_the_old_shapes(methods: dict[str, dict[str, Any]]) -> None:
    """The schemas are not vacuous: the pre-seed result shapes fail them."""
    old_embed = {"model": "m", "quality": 2, "dims": 3, "vectors": [[1, 2, 3]], "scales": [1.0]}
    old_rerank = {"model": "m", "results": [{"id": "a", "index": 0, "score": 1.0}]}
    old_health = {"status": "ok", "models_ready": ["m"]}
    for name, old in (("embed", old_embed), ("rerank", old_rerank), ("health", old_health)):
        with pytest.raises(jsonschema.ValidationError):
            validate(old, methods[name]["result"]["schema"])
    int8_without_scale = {
        "embeddings": [[1]],
        "precision": "int8",
        "encoding": "int8",
        "dimensions": 1,
        "quality": 2,
        "model": "m",
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(int8_without_scale, methods["embed"]["result"]["schema"])
