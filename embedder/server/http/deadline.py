"""A per-process watchdog that cuts off request bodies that arrive too slowly.

A client sending its body a byte a second would hold one of the worker's HTTP threads for as
long as it likes: a per-recv timeout never fires, since each byte arrives in time. Instead the
whole body gets a deadline; when it passes, the socket's read side is shut down, the blocked
read returns (end of file), and the thread answers 408 on the still-open write side and is free
again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, sock: Any, seconds: float) -> int:
        """Shut `sock`'s read side in `seconds` unless `disarm` is called first."""
        token = next(self._ids)
        with self._cv:
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

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                due, token, sock = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if token not in self._live:
                    continue
                self._live.discard(token)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)


WATCHDOG = Watchdog()
