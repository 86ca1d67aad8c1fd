"""The cross-encoder path on a tiny ONNX graph whose scores numpy can recompute, and the
starter cosine scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.catalog import ModelSpec
from embedder.encoder import BatchLimits
from embedder.reranker import CrossEncoderReranker, Doc, sigmoid
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer
from tests import cross_encoder_graph as ceg
from tests.models import tokenizer_json

SPEC = ModelSpec(
    id="tiny-cross-encoder",
    kind="rerank",
    description="test graph",
    source="tests",
    files=(),
    max_tokens=32,
    precision="fp32",
    onnx="model.onnx",
    tokenizer="tokenizer.json",
    scorer="cross-encoder",
)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderReranker:
    tok = load_tokenizer(tokenizer_json(), SPEC.max_tokens)
    path = tmp_path_factory.mktemp("ce") / "model.onnx"
    ceg.build(path, tok.get_vocab_size())
    session = open_session(path, SessionConfig(threads=1))
    return CrossEncoderReranker(
        SPEC,
        session,
        load_tokenizer(tokenizer_json(), SPEC.max_tokens),
        load_tokenizer(tokenizer_json(), SPEC.max_tokens),
        BatchLimits(max_batch=3, max_batch_tokens=4096),
    )


DOCS = [
    Doc("a", "paris is the capital of france"),
    Doc("b", "bananas are yellow " * 20),
    Doc("c", "the eiffel tower"),
    Doc("d", "x"),
    Doc("e", "zebras and giraffes live in africa"),
]


def _expected(query: str, docs: list[Doc], truncation: str = "only_second") -> np.ndarray:
    tok = load_tokenizer(tokenizer_json(), SPEC.max_tokens)
    tok.enable_truncation(SPEC.max_tokens, strategy=truncation)
    table, proj = ceg.weights(tok.get_vocab_size())
    return np.array([ceg.expected_logit(tok.encode(query, d.text).ids, table, proj) for d in docs])


def test_scores_sorted_with_sigmoid_and_caller_ids(reranker: CrossEncoderReranker) -> None:
    query = "what is the capital of france"
    ranking = reranker.rerank(query, DOCS)
    logits = _expected(query, DOCS)
    want = sigmoid(logits)
    assert [r.id for r in ranking.results] == [DOCS[i].id for i in np.argsort(-want)]
    for r in ranking.results:
        assert r.score == pytest.approx(want[r.index], abs=1e-5)
        assert DOCS[r.index].id == r.id


def test_raw_scores_are_the_logits(reranker: CrossEncoderReranker) -> None:
    query = "capital"
    ranking = reranker.rerank(query, DOCS, raw=True)
    logits = _expected(query, DOCS)
    for r in ranking.results:
        assert r.score == pytest.approx(logits[r.index], abs=1e-5)


def test_top_k(reranker: CrossEncoderReranker) -> None:
    full = reranker.rerank("capital", DOCS)
    top = reranker.rerank("capital", DOCS, top_k=2)
    assert top.results == full.results[:2]
    assert len(reranker.rerank("capital", DOCS, top_k=50).results) == len(DOCS)


def test_document_is_truncated_not_the_query(reranker: CrossEncoderReranker) -> None:
    """The long document is cut to fit the 32-token window; the query stays whole."""
    tok = load_tokenizer(tokenizer_json(), SPEC.max_tokens)
    tok.enable_truncation(SPEC.max_tokens, strategy="only_second")
    query = "a query of several words"
    enc = tok.encode(query, DOCS[1].text)
    assert len(enc.ids) == SPEC.max_tokens
    q_ids = tok.encode(query, add_special_tokens=False).ids
    assert enc.ids[1 : 1 + len(q_ids)] == q_ids
    ranking = reranker.rerank(query, [DOCS[1]], raw=True)
    assert ranking.results[0].score == pytest.approx(_expected(query, [DOCS[1]])[0], abs=1e-5)
    assert ranking.tokens == SPEC.max_tokens


def test_query_longer_than_window_still_scores(reranker: CrossEncoderReranker) -> None:
    query = "long query " * 40
    ranking = reranker.rerank(query, DOCS, raw=True)
    want = _expected(query, DOCS, truncation="longest_first")
    for r in ranking.results:
        assert r.score == pytest.approx(want[r.index], abs=1e-5)


def test_batching_does_not_change_scores(reranker: CrossEncoderReranker) -> None:
    query = "animals in africa"
    together = {r.id: r.score for r in reranker.rerank(query, DOCS).results}
    for d in DOCS:
        alone = reranker.rerank(query, [d]).results[0]
        assert alone.score == pytest.approx(together[d.id], abs=1e-6)


def test_empty_docs(reranker: CrossEncoderReranker) -> None:
    assert reranker.rerank("q", []).results == []


def test_graph_is_a_real_file(tmp_path: Path) -> None:
    ceg.build(tmp_path / "m.onnx", 100)
    assert (tmp_path / "m.onnx").stat().st_size > 100 * ceg.DIM * 4


def test_cosine_rerank_shares_the_embedding_models_micro_batcher(starter_service: Service) -> None:
    """Rerank then shares the runners, the runs and the overload bound of embed requests."""
    spec = starter_service.catalog.default_reranker()
    assert spec.embedder is not None
    batcher = starter_service.batchers[spec.embedder]
    before = batcher.stats.jobs
    docs = [Doc("a", "vectors for retrieval"), Doc("b", "a recipe for bread")]
    _, ranking = starter_service.rerank("retrieval with embeddings", docs)
    assert batcher.stats.jobs == before + 1
    assert ranking.results[0].id == "a"
