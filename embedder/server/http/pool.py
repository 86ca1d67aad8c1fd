"""A listener's HTTP threads, and when one of them may wait on its kept-alive connection.

After an answer on a kept-alive connection gthread hands the connection back to its poller:
the thread wakes the poller, which registers the socket again; when the next request comes the
poller wakes, reads it and wakes a thread. A lone client pays those wakes on every request
after a pause, and they are most of what the server's own CPU adds to a lone text. Here the
thread that answered may instead wait on that connection for its next request and serve it
itself (embedder.server.http.linger): one wake, of the thread that serves it.

A thread waits on a client only while its pool needs no thread. Work submitted that finds no
idle thread and no room for another makes `wanted` readable, and every waiting thread hands
its connection back to the poller and goes back to work; a stopping worker does the same
(`release`). The first bytes of a request must then be followed by the rest at once, or the
connection goes back to the poller too: a client, idle or slow, never keeps a thread from
work, and never holds one for long once any of its request has arrived.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

from embedder import threadnames

_Work = tuple["futures.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Pool:
    """Up to `size` threads, started as work needs them, kept for the worker's life."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._work: deque[_Work] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._waiting = 0  # threads waiting on a connection (`waiting`)
        self._wanted = False  # the pipe holds a byte: waiting threads are to give way
        self._released = False
        self._stopped = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def submit(self, fn: Callable[..., Any], *args: Any) -> futures.Future[Any]:
        done: futures.Future[Any] = futures.Future()
        with self._cond:
            if self._stopped:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.append((done, fn, args))
            if self._idle >= len(self._work):
                self._cond.notify()
            elif len(self._threads) < self.size:
                self._start()
            elif self._waiting:
                self._want()
        return done

    @contextlib.contextmanager
    def waiting(self) -> Iterator[int | None]:
        """While the caller waits on a connection: a file descriptor that becomes readable
        when the pool wants the thread back; None when it already does (or is stopping)."""
        with self._cond:
            if self._released or len(self._work) > self._idle:  # shutdown releases too
                fd = None
            else:
                self._waiting += 1
                fd = self._read
        try:
            yield fd
        finally:
            if fd is not None:
                with self._cond:
                    self._waiting -= 1

    def release(self) -> None:
        """No thread waits on a connection from now on: the worker is stopping."""
        with self._cond:
            self._released = True
            self._want()

    def shutdown(self, wait: bool = True) -> None:
        with self._cond:
            self._stopped = self._released = True
            self._want()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    # --- in the pool's threads ----------------------------------------------------------

    def _start(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"{self.name}_{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _want(self) -> None:
        if not self._wanted:
            self._wanted = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._write, b"!")

    def _take(self) -> _Work | None:
        with self._cond:
            self._idle += 1
            try:
                while not self._work:
                    if self._stopped:
                        return None
                    self._cond.wait()
            finally:
                self._idle -= 1
            work = self._work.popleft()
            if not self._work and self._wanted and not self._released:
                self._wanted = False
                with contextlib.suppress(BlockingIOError):
                    os.read(self._read, 64)
            return work

    def _serve(self) -> None:
        threadnames.name_current()
        while (work := self._take()) is not None:
            done, fn, args = work
            if not done.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as e:  # the future carries it to the poller, as an executor's
                done.set_exception(e)
            else:
                done.set_result(result)
            del work, done, fn, args


class Pools:
    """A pool per listener, made when the listener first needs a thread: what TCP clients do
    cannot take the threads the unix sockets need."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.pools: dict[int, Pool] = {}

    def of(self, listener: int) -> Pool:
        pool = self.pools.get(listener)
        if pool is None:
            pool = Pool(self.threads, f"http-{len(self.pools)}")
            self.pools[listener] = pool
        return pool

    def submit(self, fn: Callable[..., Any], conn: Any) -> futures.Future[Any]:
        return self.of(conn.listener).submit(fn, conn)

    def release(self) -> None:
        for pool in list(self.pools.values()):
            pool.release()

    def shutdown(self, wait: bool = True) -> None:
        for pool in list(self.pools.values()):
            pool.shutdown(wait=wait)
