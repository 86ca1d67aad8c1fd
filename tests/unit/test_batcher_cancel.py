"""The micro-batcher's hooks for callers that give up (their client has gone) and for work
admitted in advance (an RPC batch's calls, reserved as one request)."""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from collections.abc import Sequence

import numpy as np
import pytest

from embedder.batcher import Batcher
from embedder.errors import ClientGone, Overloaded
from embedder.server.http.gone import closed
from embedder.tokens import Tokenized
from tests.polling import wait_until
from tests.unit.test_batcher import FakeEngine, embed


class HeldEngine(FakeEngine):
    """Holds each run until `release` is set (bounded: 60 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        self.runs.append([tok.encodings[r].text for r in rows])
        self.release.wait(60)
        return np.zeros((len(rows), self.dims), np.float32)


def test_a_caller_that_gives_up_leaves_the_queue_and_its_texts_never_run() -> None:
    eng = HeldEngine()
    b = Batcher([eng], name="t", max_texts=1)
    first = threading.Thread(target=embed, args=(b, ["held"]))
    first.start()
    wait_until("the only runner busy with 'held'", lambda: eng.runs)
    gone = threading.Event()
    raised: list[BaseException] = []

    def caller() -> None:
        try:
            embed(b, ["dropped", "too"], cancelled=gone.is_set)
        except ClientGone as exc:
            raised.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    wait_until("3 texts queued", lambda: b.queued_texts == 3)
    gone.set()
    t.join(60)
    assert raised and b.stats.dropped == 1 and b.queued_texts == 1
    eng.release.set()
    first.join(60)
    assert eng.runs == [["held"]] and b.queued_texts == 0


def test_a_running_job_is_not_dropped_its_result_arrives() -> None:
    eng = HeldEngine()
    b = Batcher([eng], name="t")
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(embed(b, ["x"], cancelled=lambda: True)))
    t.start()
    wait_until("a run", lambda: eng.runs)
    eng.release.set()
    t.join(60)
    assert out and b.stats.dropped == 0 and b.queued_texts == 0


def test_reserved_work_is_admitted_once_and_counted_until_used_or_released() -> None:
    b = Batcher([FakeEngine()], name="t", max_queued_texts=10)
    with b.reserve(6, whole=True) as whole:
        assert b.queued_texts == 6
        embed(b, ["a", "b"], reserved=whole.take(2, 0.0))  # not admitted or counted again
        assert b.queued_texts == 4 and whole.texts == 4
        with pytest.raises(Overloaded):
            b.reserve(7)  # 4 still held + 7 > 10
    assert b.queued_texts == 0, "what was not used is given back when the block ends"


def test_the_socket_probe_sees_a_peer_that_has_gone() -> None:
    here, there = socket.socketpair()
    try:
        assert not closed(here)
        there.sendall(b"pipelined bytes are not a hang-up")
        assert not closed(here)
        here.recv(100)
        there.close()
        assert closed(here)
    finally:
        here.close()


class TrackedEngine(FakeEngine):
    """Keeps a weak reference to every token batch it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[weakref.ref[Tokenized]] = []

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> Tokenized:
        tok = super().tokenize(texts)
        self.made.append(weakref.ref(tok))
        return tok


def test_a_runner_keeps_nothing_of_a_request_once_it_is_answered() -> None:
    """The runner used to hold its last group (the requests' token encodings: ~1 GiB for
    2048 texts of 8,000 characters) until the next request came."""
    eng = TrackedEngine()
    b = Batcher([eng], name="t")
    embed(b, ["a", "bb", "ccc"])
    gc.collect()
    wait_until("the tokenized texts freed", lambda: eng.made[0]() is None)


def test_a_socket_that_cannot_tell_is_not_taken_for_gone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unconnected:
        assert not closed(unconnected)
