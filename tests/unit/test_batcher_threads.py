"""The micro-batcher's threads: planning a large group holds no one else up, and the runners
stop when the model does."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.encoder import Embeddings
from embedder.errors import ModelUnavailable
from embedder.tokens import Tokenized
from tests.polling import PATIENCE, wait_until
from tests.unit.test_batcher import FakeEngine, _call, embed

# A bound, not an expectation: a fake run takes microseconds; only a caller blocked behind
# another runner's planning (the fault these tests are for) comes near it.
BLOCKED = 30.0


class Held(FakeEngine):
    """Holds the planning of any group of `big` rows or more until `plan_go` is set (`planning`
    says one is held), and any run of the text "held" until `run_go` is (`running` says so)."""

    def __init__(self, big: int = 100) -> None:
        super().__init__()
        self.big = big
        self.planning, self.plan_go = threading.Event(), threading.Event()
        self.running, self.run_go = threading.Event(), threading.Event()

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        if len(lengths) >= self.big:
            self.planning.set()
            assert self.plan_go.wait(PATIENCE), "the test never let the planning go on"
        return super().plan(lengths, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        if any(tok.encodings[r].text == "held" for r in rows):
            self.running.set()
            assert self.run_go.wait(PATIENCE), "the test never let the run go on"
        return super().run_rows(tok, rows)

    def open(self) -> None:
        self.plan_go.set()
        self.run_go.set()


def test_planning_a_large_request_holds_up_no_other_caller_or_runner() -> None:
    """One runner plans a 2048-text request (held here, as long as the test likes): the other
    runner still finishes its run and answers its caller, and a request that arrives
    meanwhile is queued, run and answered. Planning under the batcher's lock stalled both."""
    eng = Held()
    # The held run makes the measured rate tiny: admission would refuse the small request as
    # overload (rightly), which is not what this test is about.
    b = Batcher([eng, eng], name="t", max_texts=64, max_wait=1e9)
    results: dict[int, object] = {}
    try:
        held = _call(b, ["held"], results, 0)
        wait_until("a runner in the held run", eng.running.is_set)
        big = [f"big {i}" for i in range(2048)]
        planned = _call(b, big, results, 1)
        wait_until("the other runner planning the large request", eng.planning.is_set)
        eng.run_go.set()
        held.join(BLOCKED)
        assert isinstance(results.get(0), Embeddings), "a finished run could not hand back"
        _call(b, ["small"], results, 2).join(BLOCKED)
        small = results.get(2)
        assert isinstance(small, Embeddings), "a new request could not be queued or run"
        assert small.tokens == [5]
        assert not eng.plan_go.is_set(), "all this happened while the large one was planned"
    finally:
        eng.open()
    planned.join(PATIENCE)
    out = results[1]
    assert isinstance(out, Embeddings) and out.tokens == [len(t) for t in big]
    np.testing.assert_array_equal(out.vectors[:, 1], [sum(map(ord, t)) for t in big])
    assert b.queued_texts == 0
    stats = b.stats
    assert (stats.jobs, stats.texts) == (3, 2050), stats


def test_close_ends_the_runner_threads_and_refuses_new_work() -> None:
    b = Batcher([FakeEngine(), FakeEngine()], name="t")
    assert embed(b, ["before"]).tokens == [6]
    assert b.close(timeout=PATIENCE)
    assert not any(t.is_alive() for t in b._threads)
    with pytest.raises(ModelUnavailable, match="t has stopped"):
        embed(b, ["after"])
    with pytest.raises(ModelUnavailable):
        b.reserve(3)
    assert b.queued_texts == 0
    assert b.close(timeout=PATIENCE), "a second close is harmless"


def test_close_is_bounded_while_a_run_is_stuck_and_fails_what_is_queued() -> None:
    """A run cannot be cut short: close() gives up waiting for it after its timeout (False),
    the queued callers get their error at once, and the runner ends once its run does."""
    eng = Held()
    b = Batcher([eng], name="t", max_texts=1)
    results: dict[int, object] = {}
    try:
        running = _call(b, ["held"], results, 0)
        wait_until("the runner in the held run", eng.running.is_set)
        queued = _call(b, ["queued", "too"], results, 1)
        wait_until("the second request queued", lambda: b.queued_texts == 3)
        t0 = time.monotonic()
        assert b.close(timeout=0.2) is False, "the stuck run's runner cannot have ended"
        took = time.monotonic() - t0
        assert took < BLOCKED, f"close waited {took:.1f} s"
        queued.join(BLOCKED)
        assert isinstance(results.get(1), ModelUnavailable), results.get(1)
        assert b.queued_texts == 1, "only the running request still counts"
    finally:
        eng.open()
    running.join(PATIENCE)
    assert isinstance(results[0], Embeddings), "the run in progress still answers its caller"
    wait_until("the runner gone", lambda: not any(t.is_alive() for t in b._threads))
    assert b.queued_texts == 0


def test_a_group_planned_while_closing_fails_its_callers() -> None:
    """A runner planning when close() comes does not queue the group: its callers get the
    error rather than waiting for runners that are gone."""
    eng = Held(big=2)
    b = Batcher([eng], name="t")
    results: dict[int, object] = {}
    try:
        caller = _call(b, ["a", "b"], results, 0)
        wait_until("the runner planning", eng.planning.is_set)
        closing = threading.Thread(target=b.close, args=(PATIENCE,))
        closing.start()
        wait_until("close() called", lambda: b._closed)
    finally:
        eng.open()
    caller.join(PATIENCE)
    closing.join(PATIENCE)
    assert isinstance(results[0], ModelUnavailable), results[0]
    assert not any(t.is_alive() for t in b._threads) and b.queued_texts == 0
