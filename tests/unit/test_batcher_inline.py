"""A request that finds its model idle runs in its own thread: no hand-over to a runner and
back. The slots bound the runs in progress (runners and callers together) at the engines'
count, and everything the runners' path keeps (stats, metrics, rate, queue counts, errors,
close) holds for these runs too."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.encoder import Embeddings
from embedder.errors import ModelUnavailable
from embedder.tokens import Tokenized
from tests.polling import PATIENCE, wait_until
from tests.unit.test_batcher import FakeClock, FakeEngine, _call, embed


def _named(name: str, target: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=target, name=name)
    t.start()
    return t


@dataclass
class Runs:
    """What engines sharing it see: runs in progress now and at most, and per text an event
    set when its run starts (`started`) and one the test sets to let it end (`go`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    now: int = 0
    peak: int = 0
    started: dict[str, threading.Event] = field(default_factory=dict)
    go: dict[str, threading.Event] = field(default_factory=dict)

    def event(self, table: dict[str, threading.Event], text: str) -> threading.Event:
        with self.lock:
            return table.setdefault(text, threading.Event())


class Counting(FakeEngine):
    """Counts the runs in progress across the engines sharing `runs`, and holds a run of a
    text until the test releases that text."""

    def __init__(self, runs: Runs) -> None:
        super().__init__()
        self.shared = runs

    def release(self, text: str) -> None:
        self.shared.event(self.shared.go, text).set()

    def running(self, text: str) -> bool:
        return self.shared.event(self.shared.started, text).is_set()

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        texts = [tok.encodings[r].text for r in rows]
        self.threads.add(threading.current_thread().name)
        runs = self.shared
        with runs.lock:
            runs.now += 1
            runs.peak = max(runs.peak, runs.now)
        try:
            for t in texts:
                runs.event(runs.started, t).set()
            for t in texts:
                assert runs.event(runs.go, t).wait(PATIENCE), f"the test never released {t!r}"
            return super().run_rows(tok, rows)
        finally:
            with runs.lock:
                runs.now -= 1


def test_a_lone_request_runs_in_its_callers_thread_and_is_counted_as_a_runners_run() -> None:
    clock = FakeClock()
    eng = FakeEngine(clock=clock)
    observed: list[tuple[int, list[float]]] = []
    b = Batcher(
        [eng, FakeEngine()], name="t", clock=clock, observe=lambda n, w: observed.append((n, w))
    )
    got: list[Embeddings] = []
    _named("caller", lambda: got.append(embed(b, ["abc", "de"]))).join(PATIENCE)
    assert got and got[0].tokens == [3, 2]
    assert eng.threads == {"caller"}, "the rows must run in the caller's thread"
    stats = b.stats
    assert (stats.runs, stats.jobs, stats.texts) == (1, 1, 2)
    assert observed == [(2, [0.0])], "the batch and queue metrics see the run"
    assert b.rate > 0, "admission learns the rate from these runs too"
    assert b.queued_texts == 0 and b.backlog() == (0, 0.0)


def test_a_request_of_several_sub_batches_runs_its_first_here_and_the_rest_on_a_runner() -> None:
    barrier = threading.Barrier(2)
    engines = [FakeEngine(barrier=barrier), FakeEngine(barrier=barrier)]
    b = Batcher(engines, name="t")
    texts = [f"{i:02d}" + "y" * i for i in range(16)]
    got: list[Embeddings] = []
    _named("caller", lambda: got.append(embed(b, texts))).join(PATIENCE)
    assert not barrier.broken, "the caller and a runner must have run at the same time"
    threads = set().union(*(e.threads for e in engines))
    assert "caller" in threads and any(t.startswith("batcher-t-") for t in threads), threads
    np.testing.assert_array_equal(got[0].vectors[:, 1], [sum(map(ord, t)) for t in texts])
    assert b.stats.runs == 4 and b.queued_texts == 0


def test_with_every_slot_busy_requests_queue_and_no_more_runs_than_engines_are_in_progress() -> (
    None
):
    runs = Runs()
    engines = [Counting(runs), Counting(runs)]
    eng = engines[0]
    b = Batcher(engines, name="t", max_wait=1e9)
    results: dict[int, object] = {}
    threads = [_call(b, ["a"], results, 0)]
    wait_until("a running", lambda: eng.running("a"))
    threads.append(_call(b, ["b"], results, 1))
    wait_until("b running beside it", lambda: eng.running("b"))
    threads.append(_call(b, ["c"], results, 2))
    threads.append(_call(b, ["dd"], results, 3))
    wait_until("c and dd queued", lambda: b.queued_texts == 4)
    assert not eng.running("c") and not eng.running("dd"), "no slot was free"
    assert runs.now == 2
    eng.release("a")
    wait_until("a runner running c and dd as one group", lambda: eng.running("c"))
    assert eng.running("dd") and runs.now == 2
    threads.append(_call(b, ["e"], results, 4))  # every slot busy again: queued
    wait_until("e queued", lambda: b.queued_texts == 4)
    assert not eng.running("e")
    for text in ("b", "c", "dd", "e"):
        eng.release(text)
    for t in threads:
        t.join(PATIENCE)
    assert all(isinstance(results[i], Embeddings) for i in range(5)), results
    assert runs.peak == 2, "never more runs at once than engines"
    grouped = {tuple(texts) for e in engines for texts in e.runs}
    assert ("dd", "c") in grouped or ("c", "dd") in grouped, grouped
    caller_runs = [t for e in engines for t in e.threads if not t.startswith("batcher-")]
    assert len(caller_runs) == 2, "a and b ran in their callers' threads"
    assert b.queued_texts == 0 and b.stats.jobs == 5


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt or SystemExit raised during a run."""


class Raising(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.raise_: BaseException | None = None

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.raise_ is not None:
            raise self.raise_
        return super().run_rows(tok, rows)


@pytest.mark.parametrize("error", [ValueError("boom"), Interrupt()])
def test_an_inline_run_that_fails_reaches_its_caller_and_gives_everything_back(
    error: BaseException,
) -> None:
    eng = Raising()
    b = Batcher([eng], name="t")
    eng.raise_ = error
    caught: list[BaseException] = []

    def call() -> None:
        try:
            embed(b, ["x", "y"])
        except BaseException as exc:
            caught.append(exc)

    _named("caller", call).join(PATIENCE)
    assert caught == [error]
    assert eng.threads == {"caller"}
    assert b.queued_texts == 0 and b.backlog()[0] == 0
    assert len(b._idle) == 1, "the slot is free again"
    eng.raise_ = None
    assert embed(b, ["again"]).tokens == [5]


def test_close_during_an_inline_run_lets_it_finish_and_refuses_what_comes_after() -> None:
    eng = Counting(Runs())
    b = Batcher([eng], name="t")
    results: dict[int, object] = {}
    caller = _call(b, ["held"], results, 0)
    wait_until("the caller running its rows", lambda: eng.running("held"))
    assert eng.threads == {caller.name}
    assert b.close(timeout=0.2) is False, "a run is still in progress"
    with pytest.raises(ModelUnavailable):
        embed(b, ["after"])
    eng.release("held")
    caller.join(PATIENCE)
    assert isinstance(results[0], Embeddings), "the run in progress still answers its caller"
    assert b.close(timeout=PATIENCE) is True
    assert b.queued_texts == 0


def test_a_group_a_runner_fails_to_plan_fails_its_callers_and_the_runner_serves_on() -> None:
    """The runners' side of planning: a request queued behind a caller's run is planned by a
    runner; its failure reaches the request's caller, not the runner."""
    eng = Counting(Runs())
    b = Batcher([eng], name="t")
    results: dict[int, object] = {}
    held = _call(b, ["held"], results, 0)
    wait_until("the caller running its rows", lambda: eng.running("held"))
    eng.plan_error = RuntimeError("planner broke")
    queued = _call(b, ["q"], results, 1)
    wait_until("the request queued", lambda: b.queued_texts == 2)
    eng.release("held")
    held.join(PATIENCE)
    queued.join(PATIENCE)
    assert isinstance(results[0], Embeddings)
    assert isinstance(results[1], RuntimeError), results[1]
    assert b.queued_texts == 0
    eng.plan_error = None
    eng.release("again")
    assert embed(b, ["again"]).tokens == [5]


class Spreads(Counting):
    """Records over how many runners each plan was asked to balance."""

    def __init__(self, runs: Runs) -> None:
        super().__init__(runs)
        self.spreads: list[int] = []

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        self.spreads.append(parallel)
        return super().plan(lengths, parallel)


def test_a_caller_balances_its_rows_over_the_slots_that_were_free() -> None:
    """At idle a request's rows are balanced over every slot; with one slot busy, over the one
    it runs on (a share left for the busy slot would wait for it)."""
    runs = Runs()
    eng = Spreads(runs)
    b = Batcher([eng, eng], name="t")
    for text in ("x", "y", "free"):
        eng.release(text)
    assert embed(b, ["x", "y"]).tokens == [1, 1]
    results: dict[int, object] = {}
    held = _call(b, ["held"], results, 0)
    wait_until("one slot busy", lambda: eng.running("held"))
    assert embed(b, ["free", "x"]).tokens == [4, 1]
    eng.release("held")
    held.join(PATIENCE)
    assert eng.spreads == [2, 2, 1]


class PlanHeld(Counting):
    """Holds the planning of a group that holds `text` until the test sets `plan_gate`, and
    records which thread ran each text."""

    def __init__(self, runs: Runs, text: str) -> None:
        super().__init__(runs)
        self.text = text
        self.planning = threading.Event()
        self.plan_gate = threading.Event()
        self.ran_in: dict[str, str] = {}

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        if len(self.text) in lengths:
            self.planning.set()
            assert self.plan_gate.wait(PATIENCE), "the test never let the plan go on"
        return super().plan(lengths, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        for r in rows:
            self.ran_in[tok.encodings[r].text] = threading.current_thread().name
        return super().run_rows(tok, rows)


def test_a_caller_does_not_run_its_rows_while_a_runner_plans_an_older_group() -> None:
    """A group a runner has taken from the queue and is planning is in neither the queue nor
    the tasks: a request arriving then, with a slot free, is queued behind it (a runner takes
    it), not run in its own thread ahead of it."""
    runs = Runs()
    eng = PlanHeld(runs, "ccccccc")
    b = Batcher([eng, eng], name="t", max_wait=1e9)
    results: dict[int, object] = {}
    threads = [_call(b, ["aa"], results, 0)]
    wait_until("aa running", lambda: eng.running("aa"))
    threads.append(_call(b, ["bbb"], results, 1))
    wait_until("bbb running", lambda: eng.running("bbb"))
    threads.append(_call(b, ["ccccccc"], results, 2))
    wait_until("ccccccc queued", lambda: len(b._jobs) == 1)
    eng.release("aa")  # its slot's return wakes a runner, which takes ccccccc and plans it
    wait_until("a runner planning ccccccc", eng.planning.is_set)
    done: list[Embeddings] = []
    late = _named("late-caller", lambda: done.append(embed(b, ["ddddd"])))
    wait_until("ddddd running", lambda: eng.running("ddddd"))
    eng.plan_gate.set()
    for text in ("bbb", "ccccccc", "ddddd"):
        eng.release(text)
    for t in [*threads, late]:
        t.join(PATIENCE)
    assert all(isinstance(results[i], Embeddings) for i in range(3)), results
    assert done and done[0].tokens == [5]
    assert eng.ran_in["ddddd"].startswith("batcher-t-"), eng.ran_in
    assert runs.peak == 2 and b.queued_texts == 0
