"""Queue space held before tokenising (`Reservation`): whoever holds it hands it to the job
that runs its rows or gives it back, on every way out."""

from __future__ import annotations

import threading

import pytest

from embedder.batcher import Batcher
from embedder.errors import Overloaded
from embedder.planning import text_cost
from embedder.tokens import Tokenized
from tests.polling import wait_until
from tests.unit.test_batcher import FakeEngine, _call, embed


class FailingTokenizer(FakeEngine):
    def tokenize(self, texts: object, *, query: bool = False) -> Tokenized:
        raise RuntimeError("the tokenizer failed")


def test_space_is_given_back_when_tokenising_fails_whoever_reserved_it() -> None:
    b = Batcher([FailingTokenizer()], name="t")
    with pytest.raises(RuntimeError):
        embed(b, ["a", "b"])  # reserved by the batcher itself
    assert b.queued_texts == 0
    held = b.reserve(2, 50.0)
    with pytest.raises(RuntimeError):
        embed(b, ["a", "b"], reserved=held)
    assert b.queued_texts == 0 and b.backlog() == (0, None)
    assert (held.texts, held.cost) == (0, 0.0)


def test_the_job_takes_the_space_over_at_its_real_size_and_cost() -> None:
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t")
    b._ew_cost, b._ew_seconds = 1000.0, 1.0  # as if measured: 1000 cost units/s
    results: dict[int, object] = {}
    first = _call(b, ["held"], results, 0)
    wait_until("the first run", eng.started.is_set)
    held = b.reserve(2, 5.0)
    assert b.backlog()[0] == 3
    assert b.backlog()[1] == pytest.approx((text_cost(4) + 5.0) / 1000.0)
    t = threading.Thread(target=embed, args=(b, ["abc", "defgh"]), kwargs={"reserved": held})
    t.start()
    wait_until("the job queued", lambda: (held.texts, held.cost) == (0, 0.0))
    assert b.backlog()[1] == pytest.approx((text_cost(4) + text_cost(3) + text_cost(5)) / 1e3)
    gate.set()
    first.join(60)
    t.join(60)
    assert b.backlog() == (0, 0.0)


def test_a_request_that_costs_more_than_its_estimate_is_admitted_again() -> None:
    """Refused once its tokens show the queue cannot take it, and its space given back."""
    gate = threading.Event()
    eng = FakeEngine(gate=gate)
    b = Batcher([eng], name="t", max_wait=1.0)
    b._ew_cost, b._ew_seconds = 1000.0, 1.0
    results: dict[int, object] = {}
    first = _call(b, ["held"], results, 0)
    wait_until("the first run", eng.started.is_set)
    held = b.reserve(1, 1.0)  # admitted on a low estimate
    with pytest.raises(Overloaded):
        embed(b, ["L" * 2000], reserved=held)  # costs far more than 1 s of work
    assert b.queued_texts == 1, "only the running request is left"
    gate.set()
    first.join(60)
    assert b.backlog() == (0, 0.0)


def test_parts_of_a_batch_reservation_are_its_own_and_the_rest_goes_back() -> None:
    b = Batcher([FakeEngine()], name="t", max_queued_texts=10)
    with b.reserve(6, 60.0, whole=True) as whole:
        part = whole.take(2, 25.0)
        assert (part.texts, part.cost, whole.texts, whole.cost) == (2, 25.0, 4, 35.0)
        with pytest.raises(ValueError):
            whole.take(5, 1.0)
        last = whole.take(4, 1.0)  # the last texts take what is left of the cost
        assert (last.texts, last.cost, whole.cost) == (4, 35.0, 0.0)
        part.release()
        part.release()  # once only
        assert b.queued_texts == 4
    assert b.queued_texts == 4, "the parts are their holders' now"
    last.release()
    assert b.backlog() == (0, None)


def test_a_reservation_is_used_on_its_own_batcher_only() -> None:
    one, other = Batcher([FakeEngine()], name="one"), Batcher([FakeEngine()], name="other")
    held = one.reserve(1)
    with pytest.raises(ValueError, match="one"):
        embed(other, ["x"], reserved=held)
    assert one.queued_texts == 0 and other.queued_texts == 0
