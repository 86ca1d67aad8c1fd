"""Admission before tokenising: a burst of large requests to an idle model is shed at once on
the estimate of what their texts cost, not after each has spent seconds in the tokenizer;
embed and rerank requests alike."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from embedder.catalog import STARTER, Catalog, HubFile, ModelFile
from embedder.encoder import Embeddings, TextEncoder
from embedder.errors import Overloaded
from embedder.limits import estimated_cost
from embedder.planning import text_cost
from embedder.reranker import CrossEncoderReranker, Doc, Ranking
from embedder.service import Service
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from embedder.tokens import Tokenized, load_tokenizer
from tests import cross_encoder_graph as ceg
from tests.models import tokenizer_json
from tests.polling import PATIENCE, wait_until
from tests.unit.test_reranker import SPEC

MODEL = "paraphrase-minilm-l3-v2"
L6 = "all-minilm-l6-v2"
LONG = "the quick brown fox jumps over the lazy dog " * 180  # ~8,000 characters
COSINE = "minilm-cosine-rerank"  # L6's embeddings, on its micro-batcher
# A cross-encoder served as one from a catalog (the tiny graph of the reranker tests).
CROSS = replace(
    SPEC,
    id="tiny-cross-encoder-512",
    max_tokens=512,
    files=tuple(
        ModelFile(name, HubFile("tests/tiny-cross-encoder", "0" * 40, name))
        for name in ("model.onnx", "tokenizer.json")
    ),
)


def _serving(catalog: Catalog, root: Path, model: str) -> Service:
    """`model` (and what it runs on), micro-batched, with a queue bound of 10 ms: a request
    of 64 texts at the model's window is far more work than that on any machine, so which
    requests fit does not depend on its speed. Run once, so the model has a measured rate."""
    svc = Service(
        catalog,
        ModelStore(root, catalog, offline=True),
        session_config=SessionConfig(threads=2),
        models=[model],
        max_queue_wait=0.01,
    )
    svc.load_all()
    assert svc.state() == "ok", svc.health()
    if catalog.get(model).kind == "embedding":
        svc.embed(["a first run, so the model has a measured rate"], svc.resolve(model))
    else:
        svc.rerank("a first run", [Doc("a", "so the model has a measured rate")], model=model)
    return svc


@pytest.fixture(scope="module")
def service(models_root: Path) -> Iterator[Service]:
    svc = _serving(STARTER, models_root, MODEL)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def cosine(models_root: Path) -> Iterator[Service]:
    """A cosine scorer, on its embedding model's micro-batcher."""
    svc = _serving(STARTER, models_root, COSINE)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def cross(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A cross-encoder, on its own. The tiny graph's runs are far less work than a real
    model's, but the rate its first run gives (a few tokens, the run's overhead counted in)
    still puts 64 pairs at its window far beyond 10 ms."""
    root = tmp_path_factory.mktemp("cross") / "models"
    (root / CROSS.id).mkdir(parents=True)
    vocab = load_tokenizer(tokenizer_json(), CROSS.max_tokens).get_vocab_size()
    ceg.build(root / CROSS.id / "model.onnx", vocab)
    shutil.copyfile(tokenizer_json(), root / CROSS.id / "tokenizer.json")
    svc = _serving(Catalog("cross", (CROSS,), {}), root, CROSS.id)
    yield svc
    svc.stop()


@pytest.fixture(params=[COSINE, CROSS.id])
def reranking(request: pytest.FixtureRequest) -> tuple[Service, str]:
    service = request.getfixturevalue("cosine" if request.param == COSINE else "cross")
    assert isinstance(service, Service)
    return service, request.param


class HeldTokenizer:
    """Stands in for a model's tokenizer: the first call waits inside it until the test opens
    the gate, and any later call fails (a request tokenised while the queue could not take
    it)."""

    def __init__(self, real: Callable[..., Tokenized]) -> None:
        self.real = real
        self.inside, self.gate = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Tokenized:
        self.calls += 1
        if self.calls > 1:
            raise AssertionError("a request was tokenised while the queue could not take it")
        self.inside.set()
        assert self.gate.wait(PATIENCE), "the test never opened the gate"
        return self.real(*args, **kwargs)


def _burst(send: Callable[[], object], held: HeldTokenizer) -> object:
    """`send` once, held inside the tokenizer, and 7 times meanwhile: the 7 must be refused as
    Overloaded without reaching the tokenizer. The first call's result."""
    results: dict[int, object] = {}

    def call(key: int) -> None:
        try:
            results[key] = send()
        except Exception as exc:
            results[key] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    try:
        assert held.inside.wait(PATIENCE), "the first request never reached the tokenizer"
        burst = [threading.Thread(target=call, args=(k,)) for k in range(1, 8)]
        for t in burst:
            t.start()
        for t in burst:  # answered while the first is still held
            t.join(PATIENCE)
        assert not any(t.is_alive() for t in burst), "a request waited for the first one"
        shed = [results[k] for k in range(1, 8)]
        assert all(isinstance(r, Overloaded) for r in shed), shed
        assert held.calls == 1, "only the admitted request is tokenised"
    finally:
        held.gate.set()
        first.join(PATIENCE)
    return results[0]


def test_the_estimate_errs_low_and_long_texts_reach_the_window() -> None:
    assert estimated_cost(["x"], 128) == text_cost(3)
    assert estimated_cost([LONG, LONG], 128) == 2 * text_cost(128)
    assert estimated_cost(["a" * 32], 128, prefix=32) == text_cost(6)
    assert estimated_cost([None, 5], 128) == 2 * text_cost(2)  # not texts: refused later on


def test_a_burst_to_an_idle_model_is_shed_before_it_is_tokenised(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request is held inside the tokenizer; the seven sent meanwhile must be
    refused without reaching it. Before, the queue looked empty while the first was being
    tokenised: all eight were tokenised (11-19 s for 2048 texts of 8,000 characters each),
    and seven refused only then."""
    spec = service.resolve(MODEL)
    encoder = service.loader.embeddings[MODEL].encoder
    assert isinstance(encoder, TextEncoder)
    held = HeldTokenizer(encoder.tokenize)
    monkeypatch.setattr(encoder, "tokenize", held)
    out = _burst(lambda: service.embed([LONG] * 64, spec), held)
    assert isinstance(out, Embeddings) and out.vectors.shape[0] == 64, out
    batcher = service.batchers[MODEL]
    wait_until("the queue empty", lambda: batcher.backlog()[0] == 0)


def test_a_rerank_burst_to_an_idle_model_is_shed_before_it_is_tokenised(
    reranking: tuple[Service, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As embed requests are: a rerank holds queue space on the estimate of its pairs (query
    and document characters) before they are tokenised. Before, it held only its count of
    pairs, at no cost, so the seven were admitted behind the first and tokenised."""
    service, model = reranking
    runs_on = service.catalog.get(model).embedder or model  # a cosine scorer's: it embeds
    reranker = service.loader.rerankers[model]
    tokenizing: Any = (
        reranker.scorer
        if isinstance(reranker, CrossEncoderReranker)
        else service.loader.embeddings[runs_on].encoder
    )
    held = HeldTokenizer(tokenizing.tokenize)
    monkeypatch.setattr(tokenizing, "tokenize", held)
    docs = [Doc(str(i), LONG) for i in range(64)]
    out = _burst(lambda: service.rerank("which animal jumps?", docs, model=model)[1], held)
    assert isinstance(out, Ranking) and len(out.results) == 64, out
    batcher = service.batchers[runs_on]
    wait_until("the queue empty", lambda: batcher.backlog()[0] == 0)


def test_a_batch_s_own_texts_do_not_refuse_its_rerank(cosine: Service) -> None:
    """An RPC batch is one request: on an idle model, a cosine rerank that comes before the
    batch's embed calls on the same model is admitted, though the space the batch holds
    for those calls is more than the queue bound (as the batch itself was, on an idle
    model)."""
    spec = cosine.catalog.get(L6)
    docs = [Doc(str(i), LONG) for i in range(64)]
    with cosine.batch({L6: [LONG] * 64}, docs=len(docs)):
        _, ranking = cosine.rerank("which animal jumps?", docs, model=COSINE)
        out = cosine.embed([LONG] * 64, spec)
    assert len(ranking.results) == 64 and out.vectors.shape[0] == 64
    batcher = cosine.batchers[L6]
    wait_until("the queue empty", lambda: batcher.backlog()[0] == 0)


def test_a_batch_reserves_its_reranks_up_front(reranking: tuple[Service, str]) -> None:
    """An RPC batch's rerank calls are admitted with the batch, as its embed calls are: their
    texts (a cross-encoder's pairs; a cosine scorer's query and documents, on its embedding
    model) reserved up front, so a busy model refuses the batch before any work, and an
    admitted call takes its part instead of being admitted again."""
    service, model = reranking
    runs_on = service.catalog.get(model).embedder or model
    batcher = service.batchers[runs_on]
    docs = [Doc(str(i), LONG) for i in range(64)]
    texts = len(docs) + (runs_on != model)  # the query is a text of a cosine scorer's
    calls = [(model, "which animal jumps?", docs)]
    # Other requests' texts, queued: the queue has 10 left, whatever rate the model has shown.
    with (
        batcher.reserve(batcher.max_queued_texts - 10),
        pytest.raises(Overloaded),
        service.batch({}, docs=len(docs), reranks=calls),
    ):
        pytest.fail("the batch was admitted on a busy model")
    assert batcher.queued_texts == 0
    with service.batch({}, docs=len(docs), reranks=calls):
        assert batcher.queued_texts == texts
        _, ranking = service.rerank("which animal jumps?", docs, model=model)
        assert len(ranking.results) == len(docs)
        # The call ran on the batch's space (its job took it and gave it back when done):
        # had it reserved its own, the batch would still hold its texts here.
        assert batcher.queued_texts == 0
    wait_until("the queue empty", lambda: batcher.backlog()[0] == 0)
    assert batcher.queued_texts == 0
