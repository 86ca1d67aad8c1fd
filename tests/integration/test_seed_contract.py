"""The Rust seed's JSON-RPC contract, as its README states it, against a live gunicorn.

Clients of the Rust daemon use an SDK generated from its OpenRPC document, and read the fields
the README names: `resp.dimensions`, `resp.precision`, a rerank result that is an array. The two
request examples below are the README's, byte for byte (positional params).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from tests.integration import server as srv

pytestmark = pytest.mark.integration

# The seed README's examples, verbatim.
EMBED_EXAMPLE = """{ "jsonrpc": "2.0", "id": 1, "method": "embed",
  "params": [["Hello world", "Machine learning"], 1] }"""
RERANK_EXAMPLE = """{ "jsonrpc": "2.0", "id": 2, "method": "rerank",
  "params": ["what is ML?",
             [{"id":"d1","text":"ML is..."},{"id":"d2","text":"Weather..."}],
             5] }"""
# "Response includes embeddings, precision (int8/fp16), dimensions, quality, and model name.
# INT8 embeddings carry a scale field for dequantisation."
EMBED_FIELDS = {"embeddings", "precision", "dimensions", "quality", "model"}


def post_raw(live: srv.Server, text: str) -> dict[str, Any]:
    """Sends the text as it is, with no content type, as the seed's curl examples do."""
    conn = UnixHTTPConnection(live.sock("rpc.sock"), timeout=60)
    try:
        conn.request("POST", "/rpc", body=text.encode())
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200, raw
    body: dict[str, Any] = json.loads(raw)
    return body


@pytest.fixture(scope="module")
def schemas(live: srv.Server) -> dict[str, dict[str, Any]]:
    doc = live.rpc("rpc.discover")["result"]
    return {m["name"]: m["result"]["schema"] for m in doc["methods"]}


def check(schemas: dict[str, dict[str, Any]], method: str, result: Any) -> None:
    jsonschema.validate(result, schemas[method], cls=jsonschema.Draft202012Validator)


def test_embed_example(live: srv.Server, schemas: dict[str, dict[str, Any]]) -> None:
    body = post_raw(live, EMBED_EXAMPLE)
    assert body["id"] == 1 and "error" not in body, body
    r = body["result"]
    assert set(r) >= EMBED_FIELDS
    assert r["quality"] == 1 and isinstance(r["model"], str)
    assert len(r["embeddings"]) == 2 and all(len(v) == r["dimensions"] for v in r["embeddings"])
    assert r["precision"] in ("int8", "fp16")
    check(schemas, "embed", r)


@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_precision_says_what_is_on_the_wire(live: srv.Server, quality: int) -> None:
    r = live.rpc("embed", [["Hello world", "Machine learning"], quality])["result"]
    model = next(m for m in live.rpc("models.describe")["result"] if m["id"] == r["model"])
    if model["precision"] == "int8":
        assert r["precision"] == "int8" and len(r["scale"]) == 2
        assert all(isinstance(x, int) and -127 <= x <= 127 for v in r["embeddings"] for x in v)
    else:
        assert r["precision"] == "fp16" and "scale" not in r


def test_rerank_example(live: srv.Server, schemas: dict[str, dict[str, Any]]) -> None:
    body = post_raw(live, RERANK_EXAMPLE)
    assert body["id"] == 2 and "error" not in body, body
    hits = body["result"]
    assert isinstance(hits, list) and sorted(h["id"] for h in hits) == ["d1", "d2"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    check(schemas, "rerank", hits)


def test_health_on_rpc_and_rest(live: srv.Server, schemas: dict[str, dict[str, Any]]) -> None:
    rpc = live.rpc("health")["result"]
    assert rpc["status"] == "ok" and rpc["models_ready"] is True
    check(schemas, "health", rpc)
    for via in ("rest.sock", "rpc.sock"):
        status, rest = live.json(via, "GET", "/health")
        assert status == 200 and rest["status"] == "ok" and rest["models_ready"] is True
        check(schemas, "health", rest)


def test_models_list_is_model_ids(live: srv.Server, schemas: dict[str, dict[str, Any]]) -> None:
    ids = live.rpc("models.list")["result"]
    assert ids and all(isinstance(i, str) for i in ids)
    check(schemas, "models.list", ids)
    described = {m["id"] for m in live.rpc("models.describe")["result"]}
    assert set(ids) == described


@pytest.mark.parametrize("quality", [0, 5, 9, -1, 2.5, "2", True])
def test_quality_outside_1_4_is_invalid_params(live: srv.Server, quality: Any) -> None:
    err = live.rpc("embed", [["Hello world"], quality])["error"]
    assert err["code"] == -32602, err
