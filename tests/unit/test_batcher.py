"""Micro-batching: concurrent callers share runs, each gets its own rows back in order, and the
sub-batches of one request spread over the runners."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from embedder.batcher import Batcher, Reservation
from embedder.catalog import STARTER
from embedder.encoder import Embedding, Embeddings, TextEncoder
from embedder.errors import Overloaded, TimedOut
from embedder.planning import RunLimits, _run_cost, plan_batches, text_cost
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import Tokenized, load_tokenizer
from tests.models import paraphrase_onnx, tokenizer_json
from tests.polling import PATIENCE, wait_until


class _Enc:
    """Stands in for a tokenizers.Encoding: one token per character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ids = list(range(len(text)))
        self.overflowing: list[object] = []


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeEngine:
    """Vectors [length, checksum of the text]: easy to check rows landed where they belong.

    `gate` holds a run until set (`started` says a run is waiting on it); `clock` is advanced
    by the cost model's run time at `speed` cost units per fake second."""

    dims = 2

    def __init__(
        self,
        gate: threading.Event | None = None,
        barrier: threading.Barrier | None = None,
        clock: FakeClock | None = None,
        speed: float = 1000.0,
    ) -> None:
        self.gate = gate
        self.barrier = barrier
        self.clock = clock
        self.speed = speed
        self.started = threading.Event()
        self.runs: list[list[str]] = []
        self.ended: dict[str, float] = {}  # text -> fake time its run ended
        self.threads: set[str] = set()
        self.fail_on = "\x00never"
        self.tokenized = 0
        self.plan_error: BaseException | None = None

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> Tokenized:
        self.tokenized += len(texts)
        encs = [_Enc(t) for t in texts]
        return Tokenized(encs, [len(t) for t in texts])  # type: ignore[arg-type]

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        if self.plan_error is not None:
            raise self.plan_error
        return list(plan_batches(lengths, RunLimits(4, 4096)))

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        texts = [tok.encodings[r].text for r in rows]
        if self.fail_on in texts:
            raise ValueError("boom")
        self.runs.append(texts)
        self.threads.add(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(PATIENCE), "the test never opened the gate"
        if self.barrier is not None:
            barrier, self.barrier = self.barrier, None
            barrier.wait(PATIENCE)  # both runners must be running at once
        if self.clock is not None:
            longest = max(len(t) for t in texts)
            self.clock.t += _run_cost(len(texts), longest) / self.speed
            self.ended.update((t, self.clock.t) for t in texts)
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], np.float32)

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings:
        return Embeddings(pooled.copy(), list(tok.lengths), [False] * len(tok.lengths))


def embed(
    b: Batcher,
    texts: Sequence[str],
    *,
    cancelled: Callable[[], bool] | None = None,
    reserved: Reservation | None = None,
) -> Embeddings:
    """What a served model does with its batcher (`encoder.Embedding`)."""
    engine = b._engines[0]
    assert isinstance(engine, FakeEngine | TextEncoder)
    return Embedding(engine, b).embed(texts, cancelled=cancelled, reserved=reserved)


def _call(b: Batcher, texts: list[str], out: dict[int, object], key: int) -> threading.Thread:
    """embed(b, texts) in a thread; its result or error lands in out[key]."""

    def body() -> None:
        try:
            out[key] = embed(b, texts)
        except Exception as exc:
            out[key] = exc

    t = threading.Thread(target=body)
    t.start()
    return t


def test_lone_request_runs_alone() -> None:
    eng = FakeEngine()
    b = Batcher([eng], name="t")
    out = embed(b, ["abc"])
    assert eng.runs == [["abc"]]
    assert out.tokens == [3]


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=64)
    results: dict[int, object] = {}
    threads = [_call(b, ["first", "y"], results, 100)]
    wait_until("the first run", eng.started.is_set)
    threads += [_call(b, [f"text-{i}", "x" * (i + 1)], results, i) for i in range(12)]
    wait_until("every request queued behind the first", lambda: b.queued_texts == 26)
    gate.set()
    for t in threads:
        t.join(PATIENCE)
    assert len(results) == 13
    assert sum(len(r) for r in eng.runs) == 26
    assert len(eng.runs) < 12, "the queued requests must have shared runs"
    for i in range(12):
        res = results[i]
        assert isinstance(res, Embeddings)
        assert res.tokens == [len(f"text-{i}"), i + 1]
        assert res.vectors.shape == (2, 2)
        assert res.vectors[0, 1] == sum(map(ord, f"text-{i}"))
        assert res.vectors[1, 0] == float(i + 1)


def test_one_request_spreads_over_the_runners() -> None:
    barrier = threading.Barrier(2)
    engines = [FakeEngine(barrier=barrier), FakeEngine(barrier=barrier)]
    b = Batcher(engines, name="t")
    texts = [f"{i:02d}" + "y" * i for i in range(16)]  # 4 sub-batches of 4
    out = embed(b, texts)
    assert not barrier.broken, "the two runners never ran sub-batches at the same time"
    assert all(e.runs for e in engines), "both runners must have run a sub-batch"
    assert out.tokens == [len(t) for t in texts]
    np.testing.assert_array_equal(out.vectors[:, 1], [sum(map(ord, t)) for t in texts])


def test_errors_reach_every_caller_of_the_group_and_the_runners_survive() -> None:
    eng = FakeEngine()
    eng.fail_on = "bad"
    b = Batcher([eng, FakeEngine()], name="t")
    with pytest.raises(ValueError):
        embed(b, ["bad"])
    assert embed(b, ["good"]).tokens == [4]
    assert b.queued_texts == 0


@pytest.mark.parametrize("where", ["plan", "observer"])
def test_a_failure_while_grouping_reaches_the_callers_and_the_runner_survives(where: str) -> None:
    """Planning and the metrics observer run in the runner thread on jobs already taken off
    the queue: their callers must get the error (not wait forever), the queue count must fall
    (not 503 for good), and the runner must serve the next request."""
    eng = FakeEngine()
    calls = {"observed": 0}

    def observe(texts: int, waits: list[float]) -> None:
        calls["observed"] += 1
        if where == "observer" and calls["observed"] == 1:
            raise RuntimeError("metrics broke")

    if where == "plan":
        eng.plan_error = RuntimeError("planner broke")
    b = Batcher([eng], name="t", observe=observe)
    results: dict[int, object] = {}
    _call(b, ["a", "b"], results, 0).join(PATIENCE)
    assert isinstance(results.get(0), RuntimeError), results
    assert b.queued_texts == 0
    eng.plan_error = None
    assert embed(b, ["again"]).tokens == [5]


def test_a_caller_waits_within_its_bound_and_leaves_the_queue() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_request_wait=0.2)
    results: dict[int, object] = {}
    first = _call(b, ["held"], results, 0)  # found the model idle: runs in its own thread
    wait_until("the first run", eng.started.is_set)
    with pytest.raises(TimedOut, match="within"):
        embed(b, ["queued", "behind"])
    assert b.queued_texts == 1, "the abandoned job must not count against admission"
    gate.set()
    first.join(PATIENCE)
    assert isinstance(results[0], Embeddings), "a caller running its own rows gets them"
    assert b.queued_texts == 0
    assert eng.runs == [["held"]], "the abandoned queued job must not run"


class RunnersHeld(FakeEngine):
    """Holds every run in a runner thread until `go` is set; runs in callers' threads pass."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.held = threading.Event()

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        if threading.current_thread().name.startswith("batcher-"):
            self.held.set()
            assert self.go.wait(PATIENCE), "the test never let the runner go on"
        return super().run_rows(tok, rows)


def test_a_caller_whose_rows_run_on_a_runner_gives_up_within_its_bound() -> None:
    """The caller runs its first sub-batch and a runner the other, which is stuck: the caller
    stops waiting at its bound, and the run finishes unseen."""
    eng = RunnersHeld()
    b = Batcher([eng, eng], name="t", max_request_wait=0.2)
    try:
        with pytest.raises(TimedOut, match="within"):
            embed(b, [f"text {i}" for i in range(5)])  # 2 sub-batches of at most 4
        wait_until("the runner's run", eng.held.is_set)
    finally:
        eng.go.set()
    wait_until("the held run to end", lambda: b.queued_texts == 0)
    assert len(eng.runs) == 2 and sum(map(len, eng.runs)) == 5


def test_a_large_request_may_wait_as_long_as_its_work_takes() -> None:
    """The wait bound grows with the work expected at the measured rate: a lone request of a
    minute's work is not cut off at `max_request_wait` (a stuck run still is)."""
    b = Batcher([FakeEngine()], name="t", max_request_wait=60.0)
    assert b.request_bound(1e6) == 60.0  # no run yet: no rate to go by
    b._ew_cost, b._ew_seconds = 100.0, 1.0  # as if measured: 100 cost units/s on one runner
    assert b.request_bound(0.0) == 60.0
    assert b.request_bound(6000.0) == pytest.approx(60.0 + 4 * 60.0)


def test_queue_bound_gives_overloaded_before_tokenising() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=4, max_queued_texts=8)
    results: dict[int, object] = {}
    threads = [_call(b, ["a"], results, 0)]
    wait_until("the first run", eng.started.is_set)
    threads += [_call(b, ["b"] * 3, results, i) for i in (1, 2)]
    wait_until("two requests queued", lambda: b.queued_texts == 7)
    tokenized = eng.tokenized
    with pytest.raises(Overloaded):
        embed(b, ["c"] * 4)
    assert eng.tokenized == tokenized, "a refused request must not be tokenised"
    gate.set()
    for t in threads:
        t.join(PATIENCE)
    assert b.queued_texts == 0


def test_expected_wait_over_the_bound_gives_overloaded_with_retry_after() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_texts=4, max_wait=2.0)
    b._ew_cost, b._ew_seconds = 2 * text_cost(1), 1.0  # as if measured: 2 short texts/s
    results: dict[int, object] = {}
    threads = [_call(b, ["a"], results, 0)]
    wait_until("the first run", eng.started.is_set)
    threads.append(_call(b, ["b"] * 3, results, 1))
    wait_until("the second request queued", lambda: b.queued_texts == 4)
    with pytest.raises(Overloaded) as err:
        embed(b, ["c"] * 4)
    assert err.value.retry_after >= 1
    gate.set()
    for t in threads:
        t.join(PATIENCE)


def test_admitted_requests_finish_within_the_queue_bound_whatever_their_length() -> None:
    """The rate is learned on short texts, then long ones arrive (what overload looked like:
    12.9 s waits under a 10 s bound). Admission must estimate by cost, not by text count:
    every admitted request finishes within max_wait of fake time, and some are refused."""
    clock = FakeClock()
    gate = threading.Event()
    eng = FakeEngine(clock=clock, speed=1000.0)
    b = Batcher([eng], name="t", max_texts=8, max_wait=10.0, clock=clock)
    for i in range(20):
        embed(b, [f"s{i:02d}"] * 4)  # learns the rate on 4-token texts
    eng.gate, eng.started = gate, threading.Event()
    results: dict[int, object] = {}
    threads = [_call(b, ["hold"], results, 0)]
    wait_until("the held run", eng.started.is_set)
    t0 = clock.t
    for i in range(1, 60):
        before = b.queued_texts
        threads.append(_call(b, [f"{i:03d}" + "L" * 400] * 2, results, i))
        wait_until(
            "the request queued or refused",
            lambda i=i, before=before: b.queued_texts > before or i in results,  # type: ignore[misc]
        )
    gate.set()
    for t in threads:
        t.join(PATIENCE)
    admitted = [i for i in range(1, 60) if isinstance(results[i], Embeddings)]
    refused = [i for i in range(1, 60) if isinstance(results[i], Overloaded)]
    assert len(admitted) + len(refused) == 59
    assert refused, "the long requests must overload the queue"
    assert len(admitted) >= 2
    for i in admitted:
        waited = eng.ended[f"{i:03d}" + "L" * 400] - t0
        assert waited <= 10.0, f"request {i} was admitted but finished after {waited:.1f} s"


def test_pool_of_real_sessions_gives_the_engines_own_vectors() -> None:
    """Two single-thread sessions of a shipped model, many callers: the vectors of embedding
    each request alone, whatever group and sub-batch each text ran in."""
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    tok = load_tokenizer(tokenizer_json(), 128)

    def engine() -> TextEncoder:
        return TextEncoder(spec, open_session(paraphrase_onnx(), SessionConfig(threads=1)), tok)

    ref = engine()
    b = Batcher([engine(), engine()], name="real")
    requests = [
        [f"request {i} text {j} " + "word " * (3 * j + i) for j in range(1 + i % 5)]
        for i in range(24)
    ]
    got: dict[int, Embeddings] = {}

    def call(i: int) -> None:
        got[i] = embed(b, requests[i])

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
