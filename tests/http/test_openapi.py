"""/openapi.json describes what the server really does: real responses validate against it."""

from __future__ import annotations

from typing import Any

import falcon.testing
import jsonschema
import orjson
import pytest


@pytest.fixture(scope="module")
def spec(client) -> dict[str, Any]:
    r = client.simulate_get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json
    assert doc["openapi"].startswith("3.1")
    return doc


def schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


def check(spec: dict[str, Any], name: str, instance: Any) -> None:
    jsonschema.validate(instance, schema(spec, name), cls=jsonschema.Draft202012Validator)


def post(client: falcon.testing.TestClient, path: str, body: object) -> falcon.testing.Result:
    return client.simulate_post(
        path, body=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )


def test_embeddings_float_and_base64(client, spec) -> None:
    for fmt in ("float", "base64"):
        req = {"input": ["a", "b"], "encoding_format": fmt}
        check(spec, "EmbeddingRequest", req)
        r = post(client, "/v1/embeddings", req)
        check(spec, "EmbeddingResponse", r.json)


def test_rerank(client, spec) -> None:
    req = {"query": "q", "documents": ["x", {"text": "y"}], "return_documents": True}
    check(spec, "RerankRequest", req)
    check(spec, "RerankResponse", post(client, "/v1/rerank", req).json)


def test_models_and_health(client, spec) -> None:
    check(spec, "ModelList", client.simulate_get("/v1/models").json)
    check(spec, "Model", client.simulate_get("/v1/models/all-minilm-l6-v2").json)
    check(spec, "Health", client.simulate_get("/health").json)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": []}),
        ("/v1/embeddings", {"input": "x", "model": "nope"}),
        ("/v1/rerank", {"query": "q"}),
    ],
)
def test_errors(client, spec, path: str, body: object) -> None:
    r = post(client, path, body)
    assert str(r.status_code) in spec["paths"][path]["post"]["responses"]
    check(spec, "Error", r.json)


def test_every_documented_path_is_served(client, spec) -> None:
    for path, ops in spec["paths"].items():
        concrete = path.replace("{model_id}", "all-minilm-l6-v2")
        for method in ops:
            r = client.simulate_request(
                method.upper(), concrete, body=b"{}", headers={"Content-Type": "application/json"}
            )
            assert r.status_code != 405 and not (
                r.status_code == 404 and "{" not in path and method == "get"
            ), (method, path)
