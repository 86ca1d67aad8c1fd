"""A listener's HTTP threads: work runs on them, and a thread waiting on a connection is
wanted back as soon as work would otherwise wait for a thread."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import pytest

from embedder.server.http.pool import Pool, Pools

WAIT = 60.0  # a bound for what must happen; never waited out when all is well


def _readable(fd: int, seconds: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], seconds)[0])


@pytest.fixture()
def pool() -> Iterator[Pool]:
    made = Pool(2, "http-test")
    yield made
    made.shutdown()


class _Held:
    """Work that holds its thread until let go."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        assert self.go.wait(WAIT)
        return "done"


def test_work_runs_and_its_result_or_error_comes_back(pool: Pool) -> None:
    assert pool.submit(lambda a, b: a + b, 2, 3).result(WAIT) == 5

    def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit(fails).result(WAIT)
    assert (
        pool.submit(lambda: threading.current_thread().name).result(WAIT).startswith("http-test_")
    )


def test_a_waiting_thread_is_wanted_back_only_when_work_finds_no_thread(pool: Pool) -> None:
    """Two threads: one waits on its connection, one is busy. Work that an idle thread can
    take leaves the waiter alone; work that finds none wants it back; once that work has a
    thread the waiter may wait again."""
    busy = _Held()
    first = pool.submit(busy)
    assert busy.started.wait(WAIT)
    with pool.waiting() as wanted:
        assert wanted is not None and not _readable(wanted)
        # A second thread is started for the next work: nothing wanted.
        assert pool.submit(lambda: 1).result(WAIT) == 1
        # That thread is idle now: the next work goes to it, still nothing wanted.
        assert pool.submit(lambda: 2).result(WAIT) == 2
        assert not _readable(wanted)
        other = _Held()
        second = pool.submit(other)
        assert other.started.wait(WAIT)
        queued = pool.submit(lambda: 3)  # both threads taken: the waiter is wanted
        assert _readable(wanted, WAIT)
    busy.go.set()  # the first thread is free: it takes the queued work
    assert first.result(WAIT) == "done" and queued.result(WAIT) == 3
    with pool.waiting() as wanted:
        assert wanted is not None and not _readable(wanted), "taken work wants nothing more"
    other.go.set()
    assert second.result(WAIT) == "done"


def test_no_thread_starts_waiting_while_work_waits_for_one() -> None:
    one = Pool(1, "http-one")
    try:
        busy = _Held()
        running = one.submit(busy)
        assert busy.started.wait(WAIT)
        queued = one.submit(lambda: "queued")
        with one.waiting() as wanted:
            assert wanted is None
        busy.go.set()
        assert running.result(WAIT) == "done" and queued.result(WAIT) == "queued"
    finally:
        one.shutdown()


def test_a_stopping_worker_wants_every_thread_back_for_good(pool: Pool) -> None:
    with pool.waiting() as wanted:
        assert wanted is not None and not _readable(wanted)
        pool.release()
        assert _readable(wanted, WAIT)
    with pool.waiting() as wanted:
        assert wanted is None
    assert pool.submit(lambda: "still works").result(WAIT) == "still works"


def test_shutdown_ends_the_threads_and_refuses_new_work() -> None:
    pools = Pools(2)
    first = pools.of(1)
    assert pools.submit(lambda conn: conn, _Conn(1)).result(WAIT).listener == 1
    assert pools.of(2) is not first and pools.of(1) is first
    threads = [t for t in threading.enumerate() if t.name.startswith(first.name + "_")]
    assert threads
    pools.shutdown()
    for thread in threads:
        assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        first.submit(lambda: None)


class _Conn:
    def __init__(self, listener: int) -> None:
        self.listener = listener
