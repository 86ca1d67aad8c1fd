"""Arbitrary bodies posted to /v1/embeddings, /v1/rerank and /rpc of the app on the loaded
starter models: never a 500, always JSON in the API's own error shape. Bodies are any JSON,
any bytes, and objects shaped enough (real field names, mostly the right types) to reach the
models themselves."""

from __future__ import annotations

from typing import Any

import falcon.testing
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedder.catalog import STARTER
from tests.unit.test_parsers_property import BODY as RPC_BODY
from tests.unit.test_parsers_property import JSON, TEXTS, weighted

pytestmark = pytest.mark.slow  # the inner loop (make quick) leaves these to make test

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_HEADERS = {"Content-Type": "application/json"}
MODELS = st.sampled_from([s.id for s in STARTER] + [*STARTER.aliases, "nope"])


def mostly(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right type four times in five, else any JSON value."""
    return weighted((4, right), (1, JSON))


def shaped(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    """Objects with the required fields two times in three, else any field may be missing."""
    full = st.fixed_dictionaries(required, optional=optional)
    partial = st.fixed_dictionaries({}, optional={**required, **optional})
    return weighted((4, full), (1, partial), (1, JSON))


EMBED_BODY = shaped(
    {"input": mostly(TEXTS)},
    {
        "model": mostly(MODELS),
        "encoding_format": mostly(st.sampled_from(["float", "base64"])),
        "dimensions": mostly(st.integers(min_value=-1, max_value=800)),
        "user": JSON,
    },
)
DOCUMENTS = st.lists(
    st.text(min_size=1, max_size=12) | st.fixed_dictionaries({"text": mostly(st.text())}),
    max_size=5,
)
RERANK_BODY = shaped(
    {"query": mostly(st.text(max_size=12)), "documents": mostly(DOCUMENTS)},
    {
        "top_n": mostly(st.integers(min_value=-1, max_value=6)),
        "top_k": mostly(st.integers(min_value=-1, max_value=6)),
        "model": mostly(st.just("minilm-cosine-rerank") | MODELS),
        "return_documents": mostly(st.booleans()),
        "raw_scores": JSON,
    },
)


def raw(body: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The body as JSON bytes, or any bytes at all."""
    return weighted((5, body.map(orjson.dumps)), (1, st.binary(max_size=64)))


def post(client: falcon.testing.TestClient, path: str, data: bytes) -> falcon.testing.Result:
    r = client.simulate_post(path, body=data, headers=JSON_HEADERS)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    return r


def check_rest(r: falcon.testing.Result) -> None:
    doc = orjson.loads(r.content)
    if r.status_code != 200:
        err = doc["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err


@FUZZ
@given(raw(EMBED_BODY))
def test_embeddings_never_500(client: falcon.testing.TestClient, data: bytes) -> None:
    r = post(client, "/v1/embeddings", data)
    check_rest(r)
    if r.status_code == 200:
        sent = orjson.loads(data)["input"]
        rows = orjson.loads(r.content)["data"]
        assert len(rows) == (1 if isinstance(sent, str) else len(sent))
        assert [row["index"] for row in rows] == list(range(len(rows)))


@FUZZ
@given(raw(RERANK_BODY))
def test_rerank_never_500(client: falcon.testing.TestClient, data: bytes) -> None:
    check_rest(post(client, "/v1/rerank", data))


@FUZZ
@given(raw(RPC_BODY))
def test_rpc_never_500(client: falcon.testing.TestClient, data: bytes) -> None:
    r = post(client, "/rpc", data)
    if r.status_code == 204:
        assert not r.content
        return
    doc = orjson.loads(r.content)
    for response in doc if isinstance(doc, list) else [doc]:
        assert response["jsonrpc"] == "2.0" and ("result" in response) != ("error" in response)
        if "error" in response:
            assert response["error"]["code"] != -32603, response["error"]
