"""Micro-batching: concurrent callers share runs, each gets its own rows back in order, and the
sub-batches of one request spread over the runners."""

from __future__ import annotations

import threading
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
from tests.polling import PATIENCE, wait_until


class _Enc:
    """Stands in for a tokenizers.Encoding: one token per character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ids = list(range(len(text)))
        self.overflowing: list[object] = []


class FakeEngine:
    """Vectors [length, checksum of the text]: easy to check rows landed where they belong.

    `gate`: each run waits for it (a test holds the runner busy while it queues more work);
    `entered` is set once a run has started; `barrier`: runs wait until that many runs are
    in progress at once, which only happens when the runners really run side by side."""

    dims = 2

    def __init__(
        self,
        gate: threading.Event | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.gate = gate
        self.barrier = barrier
        self.entered = threading.Event()
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
        self.entered.set()
        if self.gate is not None and not self.gate.wait(PATIENCE):
            raise TimeoutError("the test never opened the gate")
        if self.barrier is not None:
            self.barrier.wait(PATIENCE)  # broken (and the request fails) if runs never overlap
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], np.float32)

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings:
        return Embeddings(pooled.copy(), list(tok.lengths), [False] * len(tok.lengths))


def _in_thread(b: Batcher, texts: list[str]) -> threading.Thread:
    t = threading.Thread(target=b.embed, args=(texts,), daemon=True)
    t.start()
    return t


def _queued(b: Batcher, n: int) -> None:
    wait_until(f"{n} texts queued", lambda: b.queued_texts == n)


def test_lone_request_runs_alone() -> None:
    eng = FakeEngine()
    b = Batcher([eng], name="t")
    out = b.embed(["abc"])
    assert eng.runs == [["abc"]]
    assert out.tokens == [3]


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=64)
    results: dict[int, Embeddings] = {}

    def worker(i: int) -> None:
        results[i] = b.embed([f"text-{i}", "x" * (i + 1)])

    first = threading.Thread(target=worker, args=(0,))
    first.start()
    assert eng.entered.wait(PATIENCE), "the runner never started the first request"
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 12)]
    for t in threads:
        t.start()
    _queued(b, 24)  # 11 requests wait behind the one the runner holds
    gate.set()
    for t in [first, *threads]:
        t.join(PATIENCE)
    assert len(results) == 12
    assert sum(len(r) for r in eng.runs) == 24
    # The first request ran alone; the 11 queued ones (22 texts) form one group of 4-text runs.
    assert len(eng.runs) == 1 + 6, eng.runs
    for i, res in results.items():
        assert res.tokens == [len(f"text-{i}"), i + 1]
        assert res.vectors.shape == (2, 2)
        assert res.vectors[0, 1] == sum(map(ord, f"text-{i}"))
        assert res.vectors[1, 0] == float(i + 1)


def test_one_request_spreads_over_the_runners() -> None:
    both = threading.Barrier(2)  # passes only while both runners run at once
    engines = [FakeEngine(barrier=both), FakeEngine(barrier=both)]
    b = Batcher(engines, name="t")
    texts = [f"{i:02d}" + "y" * i for i in range(16)]  # 4 sub-batches of 4
    out = b.embed(texts)
    assert all(e.runs for e in engines), "both runners must have run a sub-batch"
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
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=4, max_queued_texts=8)
    first = _in_thread(b, ["a"])
    assert eng.entered.wait(PATIENCE)  # the runner holds "a"; queue the rest
    waiting = [_in_thread(b, ["b"] * 3) for _ in range(2)]
    _queued(b, 7)
    with pytest.raises(Overloaded):
        b.embed(["c"] * 4)
    gate.set()
    for t in [first, *waiting]:
        t.join(PATIENCE)
    assert b.queued_texts == 0


def test_expected_wait_over_the_bound_gives_overloaded_with_retry_after() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=4, max_wait=2.0)
    b._ew_texts, b._ew_seconds = 2.0, 1.0  # as if measured: 2 texts/s, 8 queued take 4 s
    first = _in_thread(b, ["a"])
    assert eng.entered.wait(PATIENCE)
    queued = _in_thread(b, ["b"] * 3)
    _queued(b, 4)
    with pytest.raises(Overloaded) as err:
        b.embed(["c"] * 4)
    assert err.value.retry_after >= 1
    gate.set()
    for t in (first, queued):
        t.join(PATIENCE)


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
        t.join(PATIENCE)
    assert len(got) == len(requests)
    for i, texts in enumerate(requests):
        want = ref.embed(texts)
        assert got[i].tokens == want.tokens
        np.testing.assert_allclose(got[i].vectors, want.vectors, atol=2e-6)
