"""A model whose output holds NaN or Inf never answers 200: the request gets 503
`model_broken` (JSON-RPC -32010) naming the model, the model is marked failed in health and
status, and the log says so once. Before, such a model answered 200 with every value null.

The model is real: all-minilm-l6-v2's graph with 4 KB of a weight overwritten with 0xFF
(float32 NaN) and its build record written for those very bytes, as when a recipe or an
upload made such weights: the store's check at load cannot tell it, the output check must."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import falcon.testing
import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.errors import BrokenModel
from embedder.reranker import CrossEncoderReranker, Doc, PairScorer
from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.errors import RPC_MODEL_BROKEN
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer
from tests import cross_encoder_graph as ceg
from tests.damage import as_built, copy_models, spoil_weight
from tests.models import tokenizer_json
from tests.unit.test_reranker import SPEC

L6, COSINE, OTHER = "all-minilm-l6-v2", "minilm-cosine-rerank", "paraphrase-minilm-l3-v2"


@pytest.fixture(scope="module")
def nan_root(starter_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_models(starter_store, tmp_path_factory.mktemp("nan") / "models", L6)
    spoil_weight(root / L6 / "model.onnx")
    as_built(root / L6 / "model.onnx")
    return root


@pytest.fixture
def service(nan_root: Path) -> Service:
    store = ModelStore(nan_root, STARTER, offline=True)
    service = Service(
        STARTER, store, models=[L6, COSINE, OTHER], session_config=SessionConfig(threads=1)
    )
    service.load_all()
    assert service.state() == "ok", service.health()  # it loads: the damage is in what it computes
    return service


def _rpc(client: falcon.testing.TestClient, method: str, params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    r = client.simulate_post("/rpc", json=body)
    assert r.status_code == 200
    return r.json


def _failed_lines(caplog: pytest.LogCaptureFixture, model: str) -> int:
    return sum(r.getMessage().startswith(f"model {model} failed:") for r in caplog.records)


def test_nan_output_is_a_503_naming_the_model_and_marks_it_failed(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    client = falcon.testing.TestClient(create_app(service, HttpOptions(max_body_bytes=1 << 20)))
    with caplog.at_level("ERROR"):
        r = client.simulate_post("/v1/embeddings", json={"input": ["hello"], "model": L6})
        assert r.status_code == 503, r.text
        error = r.json["error"]
        assert error["code"] == "model_broken" and error["type"] == "server_error"
        assert f"model {L6} computed NaN or Inf" in error["message"]
        assert "retry-after" not in r.headers, "waiting does not mend damaged weights"

        health = client.simulate_get("/health").json
        assert health["status"] == "degraded" and health["models_loaded"] == [OTHER]
        assert set(health["errors"]) == {L6, COSINE}  # the cosine scorer runs on it
        assert "computed NaN or Inf" in health["errors"][L6]
        status = _rpc(client, "status", None)["result"]
        states = {m["id"]: (m["state"], m["error"]) for m in status["models"]}
        assert states[L6][0] == "error" and f"{L6} computed NaN" in states[L6][1]
        assert states[OTHER] == ("ready", None)

        # Every way in is refused alike, and no more runs of the model are made.
        rpc = _rpc(client, "embed", {"texts": ["hello"], "model": L6})["error"]
        assert rpc["code"] == RPC_MODEL_BROKEN and rpc["data"]["code"] == "model_broken"
        assert L6 in rpc["message"]
        body = {"model": COSINE, "query": "cats", "documents": ["kittens", "stocks"]}
        r = client.simulate_post("/v1/rerank", json=body)
        assert r.status_code == 503 and r.json["error"]["code"] == "model_broken", r.text
        docs = [{"id": "a", "text": "kittens"}, {"id": "b", "text": "stocks"}]
        rpc = _rpc(client, "rerank", {"query": "cats", "docs": docs, "model": COSINE})["error"]
        assert rpc["code"] == RPC_MODEL_BROKEN
        r = client.simulate_post("/v1/embeddings", json={"input": "again", "model": L6})
        assert r.status_code == 503 and r.json["error"]["code"] == "model_broken"
    assert _failed_lines(caplog, L6) == 1 and _failed_lines(caplog, COSINE) == 1
    # the other models serve on
    r = client.simulate_post("/v1/embeddings", json={"input": ["hello"], "model": OTHER})
    assert r.status_code == 200 and all(np.isfinite(r.json["data"][0]["embedding"]))


def test_the_cosine_scorer_on_a_nan_model_is_refused_too(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A rerank first: the scorer and the embedding model it runs on are marked failed."""
    with caplog.at_level("ERROR"), pytest.raises(BrokenModel, match=f"model {L6} computed"):
        service.rerank("cats", [Doc("a", "kittens"), Doc("b", "stocks")], model=COSINE)
    assert service.status_by_id[L6].state == service.status_by_id[COSINE].state == "error"
    assert _failed_lines(caplog, L6) == 1 and _failed_lines(caplog, COSINE) == 1
    with pytest.raises(BrokenModel):
        service.embed(["hello"], STARTER.get(L6))


def test_a_cross_encoder_with_nan_weights_raises_naming_it(tmp_path: Path) -> None:
    spec = replace(SPEC, id="nan-cross-encoder")
    tok = load_tokenizer(tokenizer_json(), spec.max_tokens)
    graph = tmp_path / "model.onnx"
    ceg.build(graph, tok.get_vocab_size())
    spoil_weight(graph, "table")  # the token table's first rows: [CLS] is among them
    session = open_session(graph, SessionConfig(threads=1))
    tokenizers = tok, load_tokenizer(tokenizer_json(), spec.max_tokens)
    reranker = CrossEncoderReranker(PairScorer(spec, session, *tokenizers))
    for raw in (False, True):
        with pytest.raises(BrokenModel, match="model nan-cross-encoder computed NaN or Inf"):
            reranker.rerank("cats", [Doc("a", "kittens"), Doc("b", "stocks")], raw=raw)
