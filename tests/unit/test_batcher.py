"""Micro-batching: concurrent callers share runs, each gets its own rows back in order, and the
sub-batches of one request spread over the runners."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.catalog import STARTER
from embedder.encoder import Embedder, Embeddings, Tokenized
from embedder.errors import Overloaded
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer, plan_batches
from tests.models import paraphrase_onnx, tokenizer_json


class _Enc:
    """Stands in for a tokenizers.Encoding: one token per character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ids = list(range(len(text)))
        self.overflowing: list[object] = []


class FakeEngine:
    """Vectors [length, checksum of the text]: easy to check rows landed where they belong."""

    dims = 2

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.runs: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail_on = "\x00never"

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        encs = [_Enc(t) for t in texts]
        return Tokenized(encs, [len(t) for t in texts])  # type: ignore[arg-type]

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        return list(plan_batches(lengths, max_batch=4, max_batch_tokens=4096))

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        texts = [tok.encodings[r].text for r in rows]
        if self.fail_on in texts:
            raise ValueError("boom")
        self.runs.append(texts)
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], np.float32)

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings:
        return Embeddings(pooled.copy(), list(tok.lengths), [False] * len(tok.lengths))


def test_lone_request_runs_alone_and_at_once() -> None:
    eng = FakeEngine()
    b = Batcher([eng], name="t")
    t0 = time.monotonic()
    out = b.embed(["abc"])
    assert time.monotonic() - t0 < 0.5
    assert eng.runs == [["abc"]]
    assert out.tokens == [3]


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    eng = FakeEngine(delay=0.05)
    b = Batcher([eng], name="t", max_texts=64)
    results: dict[int, Embeddings] = {}

    def worker(i: int) -> None:
        results[i] = b.embed([f"text-{i}", "x" * (i + 1)])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 12
    assert sum(len(r) for r in eng.runs) == 24
    assert len(eng.runs) < 12, "some requests must have shared a run"
    for i, res in results.items():
        assert res.tokens == [len(f"text-{i}"), i + 1]
        assert res.vectors.shape == (2, 2)
        assert res.vectors[0, 1] == sum(map(ord, f"text-{i}"))
        assert res.vectors[1, 0] == float(i + 1)


def test_one_request_spreads_over_the_runners() -> None:
    engines = [FakeEngine(delay=0.1), FakeEngine(delay=0.1)]
    b = Batcher(engines, name="t")
    texts = [f"{i:02d}" + "y" * i for i in range(16)]  # 4 sub-batches of 4
    began = time.monotonic()
    out = b.embed(texts)
    took = time.monotonic() - began
    assert all(e.runs for e in engines), "both runners must have run a sub-batch"
    assert took < 0.35, f"4 runs of 0.1 s on 2 runners took {took:.2f} s"
    assert out.tokens == [len(t) for t in texts]
    np.testing.assert_array_equal(out.vectors[:, 1], [sum(map(ord, t)) for t in texts])


def test_errors_reach_every_caller_of_the_group_and_the_runners_survive() -> None:
    eng = FakeEngine()
    eng.fail_on = "bad"
    b = Batcher([eng, FakeEngine()], name="t")
    with pytest.raises(ValueError):
        b.embed(["bad"])
    assert b.embed(["good"]).tokens == [4]
    assert b.queued_texts == 0


def test_queue_bound_gives_overloaded() -> None:
    gate = threading.Event()
    b = Batcher([FakeEngine(gate=gate)], name="t", max_texts=4, max_queued_texts=8)
    first = threading.Thread(target=b.embed, args=(["a"],))
    first.start()
    time.sleep(0.1)  # the runner holds "a"; queue the rest
    waiting = [threading.Thread(target=b.embed, args=(["b"] * 3,)) for _ in range(2)]
    for t in waiting:
        t.start()
    time.sleep(0.1)
    with pytest.raises(Overloaded):
        b.embed(["c"] * 4)
    gate.set()
    for t in [first, *waiting]:
        t.join(5)
    assert b.queued_texts == 0


def test_expected_wait_over_the_bound_gives_overloaded_with_retry_after() -> None:
    gate = threading.Event()
    b = Batcher([FakeEngine(gate=gate)], name="t", max_texts=4, max_wait=2.0)
    b._ew_texts, b._ew_seconds = 2.0, 1.0  # as if measured: 2 texts/s, 8 queued take 4 s
    first = threading.Thread(target=b.embed, args=(["a"],))
    first.start()
    time.sleep(0.1)
    queued = threading.Thread(target=b.embed, args=(["b"] * 3,))
    queued.start()
    time.sleep(0.1)
    with pytest.raises(Overloaded) as err:
        b.embed(["c"] * 4)
    assert err.value.retry_after >= 1
    gate.set()
    for t in (first, queued):
        t.join(5)


def test_pool_of_real_sessions_gives_the_engines_own_vectors() -> None:
    """Two single-thread sessions of a shipped model, many callers: the vectors of embedding
    each request alone, whatever group and sub-batch each text ran in."""
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    tok = load_tokenizer(tokenizer_json(), 128)

    def engine() -> Embedder:
        return Embedder(spec, open_session(paraphrase_onnx(), SessionConfig(threads=1)), tok)

    ref = engine()
    b = Batcher([engine(), engine()], name="real")
    requests = [
        [f"request {i} text {j} " + "word " * (3 * j + i) for j in range(1 + i % 5)]
        for i in range(24)
    ]
    got: dict[int, Embeddings] = {}

    def call(i: int) -> None:
        got[i] = b.embed(requests[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == len(requests)
    for i, texts in enumerate(requests):
        want = ref.embed(texts)
        assert got[i].tokens == want.tokens
        np.testing.assert_allclose(got[i].vectors, want.vectors, atol=2e-6)
