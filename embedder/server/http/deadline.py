"""A watchdog that cuts off request bodies that arrive too slowly.

A client sending its body a byte a second would hold one of the worker's HTTP threads for as
long as it likes: a per-recv timeout never fires, since each byte arrives in time. Instead the
whole body gets a deadline; when it passes, the socket's read side is shut down, the blocked
read returns (end of file), and the thread answers 408 on the still-open write side and is free
again.

Each app has its own watchdog (made by whoever builds the app, one per gunicorn worker): its
thread starts with the first deadline, so an app that never reads from a real socket (the
falcon.testing apps) never starts one, and `close()` ends it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from typing import Any

log = logging.getLogger("embedder.server.http")


class WatchdogClosed(RuntimeError):
    """A deadline asked of a watchdog whose owner has closed it."""


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        """True while the deadline thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def arm(self, sock: Any, seconds: float) -> int:
        """Shut `sock`'s read side in `seconds` unless `disarm` is called first."""
        token = next(self._ids)
        with self._cv:
            if self._closed:
                raise WatchdogClosed("the body watchdog is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, sock))
            self._live.add(token)
            self._cv.notify()
        return token

    def disarm(self, token: int) -> bool:
        """True if the deadline had not fired."""
        with self._cv:
            if token in self._live:
                self._live.discard(token)
                return True
            return False

    def close(self, timeout: float = 10.0) -> None:
        """End the thread (pending deadlines are dropped: their app is going away). Waits at
        most `timeout` seconds for it."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._live.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                due, token, sock = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if token not in self._live:
                    continue
                self._live.discard(token)
            self._cut(sock)

    @staticmethod
    def _cut(sock: Any) -> None:
        """Shut the read side; a socket already gone is fine, anything else is logged (the
        thread must outlive it: every later deadline depends on it)."""
        try:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        except Exception:
            log.exception("body deadline: could not shut a socket's read side")
