"""Admission before tokenising: a burst of large requests to an idle model is shed at once on
the estimate of what their texts cost, not after each has spent seconds in the tokenizer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from embedder.catalog import STARTER
from embedder.encoder import Embeddings, TextEncoder
from embedder.errors import Overloaded
from embedder.limits import estimated_cost
from embedder.planning import text_cost
from embedder.service import Service
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from embedder.tokens import Tokenized
from tests.polling import PATIENCE, wait_until

MODEL = "paraphrase-minilm-l3-v2"
LONG = "the quick brown fox jumps over the lazy dog " * 180  # ~8,000 characters


@pytest.fixture(scope="module")
def service(models_root: Path) -> Iterator[Service]:
    """One model, micro-batched, with a queue bound of 10 ms: a request of 64 texts at the
    model's window is far more work than that on any machine, so which requests fit does not
    depend on its speed."""
    svc = Service(
        STARTER,
        ModelStore(models_root, STARTER, offline=True),
        session_config=SessionConfig(threads=2),
        models=[MODEL],
        max_queue_wait=0.01,
    )
    svc.load_all()
    assert svc.state() == "ok", svc.health()
    svc.embed(["a first run, so the model has a measured rate"], svc.resolve(MODEL))
    yield svc
    svc.stop()


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
    real = encoder.tokenize
    inside, gate = threading.Event(), threading.Event()
    calls: list[int] = []

    def tokenize(texts: Sequence[str], *, query: bool = False) -> Tokenized:
        calls.append(len(texts))
        if len(calls) > 1:
            raise AssertionError("a request was tokenised while the queue could not take it")
        inside.set()
        assert gate.wait(PATIENCE), "the test never opened the gate"
        return real(texts, query=query)

    monkeypatch.setattr(encoder, "tokenize", tokenize)
    texts = [LONG] * 64
    results: dict[int, object] = {}

    def send(key: int) -> None:
        try:
            results[key] = service.embed(texts, spec)
        except Exception as exc:
            results[key] = exc

    first = threading.Thread(target=send, args=(0,))
    first.start()
    try:
        assert inside.wait(PATIENCE), "the first request never reached the tokenizer"
        burst = [threading.Thread(target=send, args=(k,)) for k in range(1, 8)]
        for t in burst:
            t.start()
        for t in burst:  # answered while the first is still held
            t.join(PATIENCE)
        assert not any(t.is_alive() for t in burst), "a request waited for the first one"
        shed = [results[k] for k in range(1, 8)]
        assert all(isinstance(r, Overloaded) for r in shed), shed
        assert calls == [64], "only the admitted request is tokenised"
    finally:
        gate.set()
        first.join(PATIENCE)
    out = results[0]
    assert isinstance(out, Embeddings) and out.vectors.shape[0] == 64, out
    batcher = service.batchers[MODEL]
    wait_until("the queue empty", lambda: batcher.backlog()[0] == 0)
