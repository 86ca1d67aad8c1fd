"""The cross-encoder path on a tiny ONNX graph whose scores numpy can recompute, and the
starter cosine scorer."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.catalog import ModelSpec
from embedder.errors import NothingToRead, Overloaded
from embedder.planning import RunLimits
from embedder.reranker import CrossEncoderReranker, Doc, PairScorer, Ranking, sigmoid
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import Tokenized, load_tokenizer
from tests import cross_encoder_graph as ceg
from tests.models import tokenizer_json
from tests.polling import wait_until

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
    return CrossEncoderReranker(_scorer(path, SPEC, RunLimits(max_batch=3, max_batch_tokens=4096)))


def _scorer(path: Path, spec: ModelSpec, limits: RunLimits) -> PairScorer:
    return PairScorer(
        spec,
        open_session(path, SessionConfig(threads=1)),
        load_tokenizer(tokenizer_json(), spec.max_tokens),
        load_tokenizer(tokenizer_json(), spec.max_tokens),
        limits,
    )


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ce512") / "model.onnx"
    ceg.build(path, load_tokenizer(tokenizer_json(), 512).get_vocab_size())
    return path


DOCS = [
    Doc("a", "paris is the capital of france"),
    Doc("b", "bananas are yellow " * 20),
    Doc("c", "the eiffel tower"),
    Doc("d", "x"),
    Doc("e", "zebras and giraffes live in africa"),
]


def _expected(
    query: str, docs: list[Doc], truncation: str = "only_second", max_tokens: int = SPEC.max_tokens
) -> np.ndarray:
    tok = load_tokenizer(tokenizer_json(), max_tokens)
    tok.enable_truncation(max_tokens, strategy=truncation)
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


def test_the_scorer_leaves_the_tokenizers_it_is_given_alone(tmp_path: Path) -> None:
    """Issue 23 item 5: PairScorer set the truncation of the tokenizers it was given, so one
    object passed for both ended up cutting the longest side first, and a query of half the
    window lost tokens to the document. The scorer now works on copies of its own."""
    tok = load_tokenizer(tokenizer_json(), SPEC.max_tokens)
    given = tok.truncation
    path = tmp_path / "model.onnx"
    ceg.build(path, tok.get_vocab_size())
    session = open_session(path, SessionConfig(threads=1))
    other = load_tokenizer(tokenizer_json(), SPEC.max_tokens)
    PairScorer(SPEC, session, tok, other)
    assert tok.truncation == other.truncation == given
    scorer = PairScorer(SPEC, session, tok, tok)
    query = "the quick brown fox jumps over the lazy dog and then it runs far away from"
    q_ids = tok.encode(query, add_special_tokens=False).ids
    assert len(q_ids) == SPEC.max_tokens // 2  # the most that is still cut on the doc side
    enc = scorer.tokenize(query, [DOCS[1]]).encodings[0]
    assert len(enc.ids) == SPEC.max_tokens
    assert enc.ids[1 : 1 + len(q_ids)] == q_ids, "the whole query is kept"


@pytest.mark.parametrize("query", ["capital", "long query " * 40], ids=["short", "long"])
def test_a_pair_side_with_nothing_to_read_is_refused(
    reranker: CrossEncoderReranker, query: str
) -> None:
    """Issue 23 item 5: a document (or query) of characters the tokenizer drops was scored as
    an empty sequence. Both truncation paths (a query within half the window, and longer)."""
    docs = [DOCS[0], Doc("z", "\u200b" * 100 + "\u0000")]
    with pytest.raises(NothingToRead) as caught:
        reranker.rerank(query, docs)
    assert caught.value.param == "documents" and caught.value.index == 1
    assert caught.value.message.startswith("documents[1] has nothing to read")
    with pytest.raises(NothingToRead) as caught:
        reranker.rerank("\u200b\u2060\u0000", DOCS)
    assert caught.value.param == "query"
    assert len(reranker.rerank(query, [Doc("x", "\u200bx")]).results) == 1


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


class Gated:
    """A scorer whose first run waits for the test (so requests queue behind it)."""

    dims = 1

    def __init__(self, scorer: PairScorer) -> None:
        self.scorer = scorer
        self.started = threading.Event()
        self.gate = threading.Event()
        self.runs: list[int] = []

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        return self.scorer.plan(lengths, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        self.runs.append(len(rows))
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return self.scorer.run_rows(tok, rows)


def test_concurrent_rerank_requests_share_runs_of_the_pool(graph: Path) -> None:
    """Pairs of concurrent requests queue in the model's micro-batcher and are planned and run
    together; every request still gets its own scores."""
    spec = replace(SPEC, max_tokens=512)
    scorer = _scorer(graph, spec, RunLimits())
    gated = Gated(scorer)
    batcher = Batcher([gated, gated], name="ce")
    reranker = CrossEncoderReranker(scorer, batcher)
    queries = [f"question number {i} about africa" for i in range(8)]
    got: dict[int, object] = {}

    def call(i: int) -> None:
        got[i] = reranker.rerank(queries[i], DOCS, raw=True)

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    wait_until("the first run", gated.started.is_set)
    threads += [threading.Thread(target=call, args=(i,)) for i in range(1, 8)]
    for t in threads[1:]:
        t.start()
    wait_until("every request queued", lambda: batcher.queued_texts == 8 * len(DOCS))
    gated.gate.set()
    for t in threads:
        t.join(10)
    assert sum(gated.runs) == 8 * len(DOCS)
    assert max(gated.runs) > len(DOCS), "a run must hold pairs of several requests"
    for i in range(8):
        ranking = got[i]
        assert isinstance(ranking, Ranking)
        want = _expected(queries[i], DOCS, max_tokens=512)
        for r in ranking.results:
            assert r.score == pytest.approx(want[r.index], abs=1e-5)


def test_rerank_overload_gives_overloaded(graph: Path) -> None:
    scorer = _scorer(graph, replace(SPEC, max_tokens=512), RunLimits())
    gated = Gated(scorer)
    batcher = Batcher([gated], name="ce", max_queued_texts=len(DOCS) + 2)
    reranker = CrossEncoderReranker(scorer, batcher)
    first = threading.Thread(target=reranker.rerank, args=("q", DOCS))
    first.start()
    wait_until("the first run", gated.started.is_set)
    with pytest.raises(Overloaded):
        reranker.rerank("q", DOCS)
    gated.gate.set()
    first.join(10)
    assert batcher.queued_texts == 0


def test_truncation_at_512_tokens_keeps_the_query_and_fits_the_window(graph: Path) -> None:
    """A 512-token window: a long document is cut to fit with the query whole; a query over
    half the window is cut too, longest side first, and both still fit."""
    spec = replace(SPEC, max_tokens=512)
    reranker = CrossEncoderReranker(_scorer(graph, spec, RunLimits()))
    long_doc = [Doc("long", "bananas are yellow and sweet " * 200)]
    short_q = "what colour are bananas"
    tok = reranker.scorer.tokenize(short_q, long_doc)
    assert tok.lengths == [512]
    q_ids = load_tokenizer(tokenizer_json(), 512).encode(short_q, add_special_tokens=False).ids
    assert tok.encodings[0].ids[1 : 1 + len(q_ids)] == q_ids
    long_q = "a very long question about fruit " * 120
    tok = reranker.scorer.tokenize(long_q, long_doc)
    assert tok.lengths == [512]
    assert tok.encodings[0].type_ids.count(1) >= 200, "the document keeps room"
    for query in (short_q, long_q):
        ranking = reranker.rerank(query, long_doc, raw=True)
        strategy = "only_second" if query == short_q else "longest_first"
        want = _expected(query, long_doc, strategy, max_tokens=512)
        assert ranking.results[0].score == pytest.approx(want[0], abs=1e-5)
        assert ranking.tokens == 512


def test_the_benchmarks_limit_pulls_the_same_scores(graph: Path) -> None:
    """`bench.engine.pull` (the reranker's limit: a call's pairs as one plan, a thread per
    runner on one shared session) gives the scores the reranker gives."""
    from embedder.tools.bench.engine import pull

    scorer = _scorer(graph, SPEC, RunLimits(max_batch=2, max_batch_tokens=4096))
    tok = scorer.tokenize("where is the eiffel tower", DOCS)
    got = pull([scorer, scorer], tok)
    want = CrossEncoderReranker(scorer).rerank("where is the eiffel tower", DOCS, raw=True)
    by_id = {r.id: r.score for r in want.results}
    np.testing.assert_allclose(got[:, 0], [by_id[d.id] for d in DOCS], atol=1e-5)
