"""Micro-batching: concurrent callers share runs, each gets its own rows back in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.encoder import Embeddings
from embedder.errors import Overloaded


def fake_run(delay: float = 0.0) -> tuple[list[list[str]], object]:
    calls: list[list[str]] = []

    def run(texts: Sequence[str]) -> Embeddings:
        calls.append(list(texts))
        time.sleep(delay)
        vecs = np.array([[float(len(t)), float(hash(t) % 97)] for t in texts], dtype=np.float32)
        return Embeddings(
            vectors=vecs, tokens=[len(t) for t in texts], truncated=[False] * len(texts)
        )

    return calls, run


def test_lone_request_runs_alone_and_at_once() -> None:
    calls, run = fake_run()
    b = Batcher(run, name="t")  # type: ignore[arg-type]
    t0 = time.monotonic()
    out = b.embed(["abc"])
    assert time.monotonic() - t0 < 0.5
    assert calls == [["abc"]]
    assert out.tokens == [3]


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    calls, run = fake_run(delay=0.05)
    b = Batcher(run, name="t", max_texts=64)  # type: ignore[arg-type]
    results: dict[int, Embeddings] = {}

    def worker(i: int) -> None:
        results[i] = b.embed([f"text-{i}", "x" * i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 12
    assert len(calls) < 12, "some requests must have shared a run"
    for i, res in results.items():
        assert res.tokens == [len(f"text-{i}"), i]
        assert res.vectors.shape == (2, 2)
        assert res.vectors[1, 0] == float(i)


def test_errors_reach_every_caller_and_the_runner_survives() -> None:
    def run(texts: Sequence[str]) -> Embeddings:
        if "bad" in texts:
            raise ValueError("boom")
        return Embeddings(
            np.zeros((len(texts), 2), np.float32), [1] * len(texts), [False] * len(texts)
        )

    b = Batcher(run, name="t")
    with pytest.raises(ValueError):
        b.embed(["bad"])
    assert b.embed(["good"]).tokens == [1]


def test_queue_bound_gives_overloaded() -> None:
    gate = threading.Event()

    def run(texts: Sequence[str]) -> Embeddings:
        gate.wait(5)
        return Embeddings(
            np.zeros((len(texts), 2), np.float32), [1] * len(texts), [False] * len(texts)
        )

    b = Batcher(run, name="t", max_texts=4, max_queued_texts=8)
    first = threading.Thread(target=b.embed, args=(["a"],))
    first.start()
    time.sleep(0.1)  # the runner holds "a"; queue the rest
    waiting = [threading.Thread(target=b.embed, args=(["b"] * 4,)) for _ in range(2)]
    for t in waiting:
        t.start()
    time.sleep(0.1)
    with pytest.raises(Overloaded):
        b.embed(["c"] * 4)
    gate.set()
    for t in [first, *waiting]:
        t.join(5)


def test_expected_wait_over_the_bound_gives_overloaded_with_retry_after() -> None:
    gate = threading.Event()

    def run(texts: Sequence[str]) -> Embeddings:
        gate.wait(5)
        return Embeddings(
            np.zeros((len(texts), 2), np.float32), [1] * len(texts), [False] * len(texts)
        )

    b = Batcher(run, name="t", max_texts=4, max_wait=2.0)
    b.rate = 2.0  # texts/s, as if measured: 8 queued texts would take 4 s
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
