"""The all-core session for lone texts (EMBEDDER_LONE_SESSION): a text that finds every runner
idle and nothing queued runs on it; anything else runs on the runners' own sessions, so work
arriving meanwhile starts at once and batches never take it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.catalog import STARTER
from embedder.encoder import Embeddings
from embedder.loading import Opener
from embedder.planning import RunLimits, text_cost
from embedder.sessions import SessionConfig
from embedder.settings import Settings
from embedder.store.files import ModelStore
from tests.polling import PATIENCE, wait_until
from tests.unit.test_batcher import FakeClock, FakeEngine, _call, embed


def _pool(lone: FakeEngine, *, gate: threading.Event | None = None) -> tuple[Batcher, FakeEngine]:
    runner = FakeEngine(gate=gate)
    return Batcher([runner, runner], name="t", lone=lone), runner


def test_a_lone_text_at_idle_runs_on_the_all_core_session() -> None:
    lone = FakeEngine()
    b, runner = _pool(lone)
    out = embed(b, ["abc"])
    assert lone.runs == [["abc"]] and not runner.runs
    assert out.tokens == [3]
    assert b.stats.lone_runs == 1 and b.stats.runs == 1


def test_a_batch_never_takes_it() -> None:
    lone = FakeEngine()
    b, runner = _pool(lone)
    embed(b, ["ab", "cd"])  # one sub-batch of two rows (the fake planner does not split)
    embed(b, [f"{i:02d}" for i in range(9)])  # three sub-batches
    assert not lone.runs and b.stats.lone_runs == 0
    assert sum(len(r) for r in runner.runs) == 11


def test_a_text_arriving_while_a_runner_is_busy_runs_on_a_runner() -> None:
    gate = threading.Event()
    lone = FakeEngine()
    b, runner = _pool(lone, gate=gate)
    results: dict[int, object] = {}
    held = _call(b, ["held", "rows"], results, 0)  # two rows: the runners' session
    wait_until("the first run", runner.started.is_set)
    second = _call(b, ["lone"], results, 1)
    wait_until("the second text on the other runner", lambda: len(runner.runs) == 2)
    gate.set()
    for t in (held, second):
        t.join(PATIENCE)
    assert not lone.runs, "a runner was busy: the cores were not free"
    assert all(isinstance(r, Embeddings) for r in results.values())


def test_work_arriving_during_a_lone_run_starts_at_once_on_a_runner() -> None:
    gate = threading.Event()
    lone = FakeEngine(gate=gate)
    b, runner = _pool(lone)
    results: dict[int, object] = {}
    first = _call(b, ["first"], results, 0)
    wait_until("the lone run", lone.started.is_set)
    out = embed(b, ["next"])  # does not wait for the held lone run
    assert runner.runs == [["next"]] and out.tokens == [4]
    gate.set()
    first.join(PATIENCE)
    assert lone.runs == [["first"]]
    assert isinstance(results[0], Embeddings)


def test_a_failing_lone_run_reaches_its_caller_and_the_runner_goes_on() -> None:
    lone = FakeEngine()
    lone.fail_on = "bad"
    b, _ = _pool(lone)
    with pytest.raises(ValueError, match="boom"):
        embed(b, ["bad"])
    assert embed(b, ["good"]).tokens == [4]
    assert b.queued_texts == 0 and b._running == 0


def test_a_lone_run_counts_every_core_it_held_in_the_rate() -> None:
    """Admission estimates queued work by runner-seconds: a lone run held all of them, so it
    counts that many (a cautious rate: lone runs are less efficient per core)."""
    clock = FakeClock()
    lone = FakeEngine(clock=clock, speed=1000.0)
    runner = FakeEngine(clock=clock, speed=1000.0)
    b = Batcher([runner, runner, runner], name="t", lone=lone, clock=clock)
    embed(b, ["x" * 40])
    assert b.stats.lone_runs == 1
    assert b._ew_seconds == pytest.approx(3 * clock.t)  # the run took clock.t on 3 cores
    assert b.rate == pytest.approx(text_cost(40) / clock.t)  # 3 runners at a third each


def test_the_setting_opens_an_all_core_session_with_the_same_vectors(
    starter_store: ModelStore,
) -> None:
    assert Settings.from_env({}).lone_session is False
    assert Settings.from_env({"EMBEDDER_LONE_SESSION": "1"}).lone_session is True
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    plain = Opener(starter_store, SessionConfig(threads=2), RunLimits()).embedding(spec)
    fast = Opener(starter_store, SessionConfig(threads=2), RunLimits(), lone_session=True)
    served = fast.embedding(spec)
    batcher = served.runner
    assert isinstance(batcher, Batcher) and batcher._lone is not None
    session = batcher._lone.session  # type: ignore[attr-defined]
    assert session.inner.get_session_options().intra_op_num_threads == 2
    options = session.inner.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    texts = ["a lone query about the weather", "another " * 60]
    for text in texts:
        got = served.embed([text])
        want = plain.embed([text])
        np.testing.assert_allclose(got.vectors, want.vectors, atol=2e-6)
    assert batcher.stats.lone_runs == len(texts)
    one = Opener(starter_store, SessionConfig(threads=1), RunLimits(), lone_session=True)
    alone = one.embedding(spec).runner
    assert isinstance(alone, Batcher) and alone._lone is None, "one core: nothing to gain"
