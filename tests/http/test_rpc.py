"""JSON-RPC 2.0 on /rpc: every method, batches, notifications and every error code."""

from __future__ import annotations

from typing import Any

import falcon.testing
import numpy as np
import orjson
import pytest

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.errors import RPC_NOT_READY, RPC_UNAUTHORIZED, RPC_UNKNOWN_MODEL
from embedder.server.http.rpc import MAX_BATCH
from embedder.service import Service
from embedder.store.files import ModelStore
from tests.http.conftest import on

JSON = {"Content-Type": "application/json"}


def rpc(client: falcon.testing.TestClient, body: Any) -> falcon.testing.Result:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.simulate_post("/rpc", body=data, headers={"Content-Type": "application/json"})


def call(client: falcon.testing.TestClient, method: str, params: Any = None, id: Any = 1) -> Any:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        msg["params"] = params
    r = rpc(client, msg)
    assert r.status_code == 200
    return r.json


def test_health_and_status(client) -> None:
    h = call(client, "health")["result"]
    assert h["status"] == "ok" and h["models_ready"] is True
    assert "all-minilm-l6-v2" in h["models_loaded"]
    s = call(client, "status")["result"]
    assert s["catalog"] == "starter" and s["models_root"]
    assert all(m["state"] == "ready" for m in s["models"])
    assert set(s["downloads"]) >= {"all-minilm-l6-v2"}


def test_models_mem_ort(client) -> None:
    ids = call(client, "models.list")["result"]
    assert set(ids) >= {"all-minilm-l6-v2", "minilm-cosine-rerank"}
    assert all(isinstance(i, str) for i in ids)
    models = call(client, "models.describe")["result"]
    assert {m["id"] for m in models} == set(ids)
    assert all(m["state"] == "ready" for m in models)
    mem = call(client, "mem_info")["result"]
    assert mem["workers"][0]["rss"] > 0 and mem["system"]["total"] > 0
    assert mem["models_disk"]["all-minilm-l6-v2"] > 0
    ort = call(client, "ort_info")["result"]
    assert ort["version_ok"] is True


def test_ort_info_names_the_providers_the_sessions_use(client, starter_service: Service) -> None:
    """Not every provider the wheel has compiled in (Azure's, for one): what runs the models."""
    ort = call(client, "ort_info")["result"]
    encoder = starter_service.loader.embeddings["all-minilm-l6-v2"].encoder
    assert isinstance(encoder, TextEncoder)
    assert ort["providers"] == encoder.session.inner.get_providers()
    assert set(ort["providers"]) <= set(ort["available_providers"])


def test_embed_compact_int8_dequantises_close(client, starter_service: Service) -> None:
    res = call(client, "embed", {"texts": ["hello", "world"], "quality": 2})["result"]
    assert res["precision"] == "int8" and res["model"] == "all-minilm-l6-v2-int8"
    assert res["encoding"] == "int8" and res["quality"] == 2 and res["dimensions"] == 384
    q = np.array(res["embeddings"], dtype=np.float32) * np.array(res["scale"])[:, None]
    ref = starter_service.embed(["hello", "world"], starter_service.resolve(quality=2))
    cos = np.sum(q * ref.vectors, axis=1) / np.linalg.norm(q, axis=1)
    assert float(cos.min()) > 0.999
    assert res["tokens"] == ref.total_tokens


def test_embed_dimensions_as_rest_has_them(client, starter_service: Service) -> None:
    params = {"texts": ["hello", "world"], "model": "all-minilm-l6-v2", "format": "float"}
    res = call(client, "embed", {**params, "dimensions": 64})["result"]
    assert res["dimensions"] == 64 and len(res["embeddings"][0]) == 64
    got = np.array(res["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    rest = client.simulate_post(
        "/v1/embeddings",
        json={"input": ["hello", "world"], "model": "all-minilm-l6-v2", "dimensions": 64},
    ).json
    np.testing.assert_allclose(got, [d["embedding"] for d in rest["data"]], atol=1e-6)
    bad = call(client, "embed", {**params, "dimensions": 999})
    assert bad["error"]["code"] == -32602 and "dimensions" in bad["error"]["message"]


def test_embed_positional_fp16(client) -> None:
    res = call(client, "embed", [["hello"], 4])["result"]
    assert res["precision"] == "fp16" and res["dimensions"] == 384
    assert len(res["embeddings"][0]) == 384 and "scale" not in res


def test_embed_float_keeps_the_models_precision(client) -> None:
    """format float: the wire is float32 (`encoding`), the model stays INT8 (`precision`)."""
    res = call(client, "embed", {"texts": ["hello"], "quality": 2, "format": "float"})["result"]
    assert (res["precision"], res["encoding"]) == ("int8", "float32") and "scale" not in res
    res = call(client, "embed", {"texts": ["hello"], "quality": 4, "format": "float"})["result"]
    assert (res["precision"], res["encoding"]) == ("fp32", "float32")


def test_rerank(client) -> None:
    docs = [
        {"id": "pasta", "text": "How to cook pasta al dente"},
        {"id": "paris", "text": "Paris is the capital and largest city of France."},
        {"id": 3, "text": "The stock market fell today."},
    ]
    res = call(client, "rerank", {"query": "What is the capital of France?", "docs": docs})
    ranked = res["result"]
    assert isinstance(ranked, list) and ranked[0]["id"] == "paris"
    assert sorted(r["id"] for r in ranked) == ["3", "paris", "pasta"]  # ids are strings
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    top = call(client, "rerank", ["capital of France", docs, 1])["result"]
    assert len(top) == 1


def test_discover_lists_every_method(client) -> None:
    doc = call(client, "rpc.discover")["result"]
    names = {m["name"] for m in doc["methods"]}
    assert names == {
        "health",
        "status",
        "models.list",
        "models.describe",
        "mem_info",
        "ort_info",
        "embed",
        "rerank",
        "rpc.discover",
    }
    assert doc["openrpc"].startswith("1.")


@pytest.mark.parametrize("req_id", ["abc", 7, 1.5, None])
def test_ids_are_echoed(client, req_id: Any) -> None:
    assert call(client, "health", id=req_id)["id"] == req_id


def _code(body: Any) -> int:
    return int(body["error"]["code"])


def test_parse_error(client) -> None:
    r = rpc(client, b"{oops")
    assert r.status_code == 200 and _code(r.json) == -32700 and r.json["id"] is None


@pytest.mark.parametrize(
    "msg",
    [
        {"jsonrpc": "1.0", "method": "health", "id": 1},
        {"method": "health", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "health", "id": {"no": 1}},
        "a string",
    ],
)
def test_invalid_request(client, msg: Any) -> None:
    assert _code(rpc(client, msg).json) == -32600


def test_method_not_found(client) -> None:
    assert _code(call(client, "nope")) == -32601


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("embed", "texts"),
        ("embed", {}),
        ("embed", {"texts": ["a"], "bogus": 1}),
        ("embed", [["a"], 1, None, False, "compact", "extra"]),
        ("embed", {"texts": []}),
        ("embed", {"texts": ["a"], "quality": "2"}),
        ("embed", {"texts": ["a"], "quality": 2.5}),
        ("embed", {"texts": ["a"], "quality": 0}),
        ("embed", {"texts": ["a"], "quality": 5}),
        ("embed", {"texts": ["a"], "quality": 9}),
        ("embed", {"texts": ["a"], "quality": True}),
        ("rerank", {"query": "q", "docs": [{"text": "no id"}]}),
        ("rerank", {"query": "q", "docs": [{"id": 1}]}),
        ("rerank", {"query": "q", "docs": [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}]}),
        ("rerank", {"query": "q", "docs": [{"id": 1, "text": "a"}], "top_k": 0}),
        ("rerank", {"query": "q", "docs": [{"id": 1, "text": "a"}], "top_k": -1}),
        ("rerank", {"query": "", "docs": []}),
        ("rerank", {"query": "q", "docs": []}),
        # Issue 15 item 7: "false" was truthy; booleans only now.
        ("embed", {"texts": ["a"], "query": "false"}),
        ("embed", {"texts": ["a"], "query": 1}),
        ("embed", {"texts": ["a"], "query": []}),
        ("rerank", {"query": "q", "docs": [{"id": 1, "text": "a"}], "raw": "false"}),
        # quality silently overrode model; naming two different models is refused.
        ("embed", {"texts": ["a"], "quality": 1, "model": "all-minilm-l6-v2"}),
        ("embed", {"texts": ["a"], "quality": 4, "model": "text-embedding-3-small"}),
        ("embed", {"texts": [" "]}),
        ("rerank", {"query": "  ", "docs": [{"id": 1, "text": "a"}]}),
        ("rerank", {"query": "q", "docs": [{"id": 1, "text": "\t"}]}),
    ],
)
def test_invalid_params(client, method: str, params: Any) -> None:
    assert _code(call(client, method, params)) == -32602


def test_quality_and_model_may_agree(client) -> None:
    """Both may be sent when they name the same model (an alias counts)."""
    for model in ("all-minilm-l6-v2", "text-embedding-3-large"):
        body = call(client, "embed", {"texts": ["a"], "quality": 4, "model": model})
        assert body["result"]["model"] == "all-minilm-l6-v2", body
    mixed = call(client, "embed", {"texts": ["a"], "quality": 1, "model": "all-minilm-l6-v2"})
    assert mixed["error"]["data"]["param"] == "quality"
    assert "send one of them" in mixed["error"]["message"]
    ok = call(client, "embed", {"texts": ["a"], "query": False})
    assert "result" in ok


def test_unknown_model(client) -> None:
    body = call(client, "embed", {"texts": ["a"], "model": "nope"})
    assert _code(body) == RPC_UNKNOWN_MODEL
    assert body["error"]["data"]["code"] == "model_not_found"


def test_rerank_takes_plain_strings_as_docs(client) -> None:
    """As REST and the client do: a string's id is its position, beside objects' own ids."""
    texts = ["How to cook pasta al dente", "Paris is the capital of France.", "Stocks fell."]
    ranked = call(client, "rerank", {"query": "capital of France?", "docs": texts})["result"]
    assert ranked[0] == {**ranked[0], "id": "1", "index": 1}
    assert sorted(r["id"] for r in ranked) == ["0", "1", "2"]
    objects = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    same = call(client, "rerank", {"query": "capital of France?", "docs": objects})["result"]
    assert ranked == same
    mixed = [texts[0], {"id": "paris", "text": texts[1]}]
    top = call(client, "rerank", ["capital of France?", mixed, 1])["result"]
    assert top == [{**top[0], "id": "paris", "index": 1}]
    assert _code(call(client, "rerank", {"query": "q", "docs": ["a", 7]})) == -32602


def test_rerank_model_names_of_cohere_and_jina_mean_the_served_reranker(client) -> None:
    docs = ["Paris is the capital of France.", "Bananas are yellow."]
    plain = call(client, "rerank", {"query": "capital?", "docs": docs})["result"]
    for name in ("rerank-english-v3.0", "rerank-v3.5", "jina-reranker-v2-base-multilingual"):
        got = call(client, "rerank", {"query": "capital?", "docs": docs, "model": name})
        assert got["result"] == plain, name
    unknown = call(client, "rerank", {"query": "capital?", "docs": docs, "model": "nope"})
    assert _code(unknown) == RPC_UNKNOWN_MODEL
    assert "rerankers here: minilm-cosine-rerank" in unknown["error"]["message"]


def test_top_k_above_docs_returns_all(client) -> None:
    docs = [{"id": i, "text": f"doc {i}"} for i in range(3)]
    res = call(client, "rerank", {"query": "q", "docs": docs, "top_k": 10})["result"]
    assert len(res) == 3


def test_not_ready(starter_store: ModelStore) -> None:
    cold = falcon.testing.TestClient(create_app(Service(STARTER, starter_store), HttpOptions()))
    body = call(cold, "embed", {"texts": ["a"]})
    assert _code(body) == RPC_NOT_READY
    assert body["error"]["data"]["retry_after"] > 0
    assert call(cold, "health")["result"]["status"] == "starting"


def test_batches_and_notifications(client) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "health", "id": 1},
        {"jsonrpc": "2.0", "method": "health"},  # notification: no response
        {"jsonrpc": "2.0", "method": "nope", "id": 2},
        5,
    ]
    out = rpc(client, batch).json
    assert [o.get("id") for o in out] == [1, 2, None]
    assert "result" in out[0] and _code(out[1]) == -32601 and _code(out[2]) == -32600


def test_only_notifications_get_no_body(client) -> None:
    r = rpc(client, [{"jsonrpc": "2.0", "method": "health"}])
    assert r.status_code == 204 and r.content == b""
    r = rpc(client, {"jsonrpc": "2.0", "method": "health"})
    assert r.status_code == 204


def test_empty_and_oversized_batches(client) -> None:
    assert _code(rpc(client, []).json) == -32600
    big = [{"jsonrpc": "2.0", "method": "health", "id": i} for i in range(MAX_BATCH + 1)]
    assert _code(rpc(client, big).json) == -32600


def _rpc_error(r: falcon.testing.Result, status: int, code: int, name: str) -> None:
    """A JSON-RPC 2.0 error response (id null: the request was not read), with its status."""
    assert r.status_code == status, r.text
    body = r.json
    assert set(body) == {"jsonrpc", "error", "id"} and body["jsonrpc"] == "2.0", body
    assert body["id"] is None and body["error"]["code"] == code, body
    assert body["error"]["message"] and body["error"]["data"]["code"].endswith(name), body


def test_http_refusals_on_rpc_are_json_rpc_errors(starter_service: Service, listeners) -> None:
    """Issue 23 item 5: the refusals the shared middleware makes (the API key, the HTTP method,
    the media type) came in OpenAI's error shape on /rpc. Now every error there is JSON-RPC's;
    where /rpc is not served, the answer stays REST's (nothing there speaks JSON-RPC)."""
    opts = HttpOptions(api_key="s3cret", tcp_expose=("rpc",))
    c = falcon.testing.TestClient(create_app(starter_service, opts))
    health = orjson.dumps({"jsonrpc": "2.0", "method": "health", "id": 1})
    tcp = on(listeners, "tcp")
    r = c.simulate_post("/rpc", body=health, headers=JSON, extras=tcp)
    _rpc_error(r, 401, RPC_UNAUTHORIZED, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    key = {"Authorization": "Bearer s3cret"}
    r = c.simulate_post(
        "/rpc", body=health, headers={"Content-Type": "text/html", **key}, extras=tcp
    )
    _rpc_error(r, 415, -32600, "unsupported_media_type")
    _rpc_error(c.simulate_get("/rpc", headers=key, extras=tcp), 405, -32600, "method_not_allowed")
    assert c.simulate_post("/rpc", body=health, headers={**JSON, **key}, extras=tcp).json["result"]
    # Where /rpc is not served (TCP without EMBEDDER_TCP_EXPOSE=rpc), REST's shape.
    plain = falcon.testing.TestClient(create_app(starter_service, HttpOptions(api_key="s3cret")))
    r = plain.simulate_post("/rpc", body=health, headers=JSON, extras=tcp)
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized", r.text
