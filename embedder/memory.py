"""Give freed batch memory back to the system once a worker falls idle.

glibc keeps freed activation buffers in its heaps for reuse, so a worker's RSS creeps up
with each new mix of batch shapes. The first fix, a low fixed mmap threshold, returned
every buffer at once but made each run fault its pages in again, most of the CPU then going
to the system. `malloc_trim(0)` after work stops does the same for the idle process and
costs nothing while requests flow (docs/memory.md has the figures).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (by default up to 8 per core, one per allocating thread).

    With 16 HTTP threads each tokenising into its own arena, freed memory fragments across
    them and trimming gives less back; two arenas kept idle RSS lower at the same throughput
    (docs/memory.md). Call before the threads start. False where there is no glibc."""
    mallopt = libc_function("mallopt")
    return mallopt is not None and mallopt(M_ARENA_MAX, count) == 1


def libc_function(symbol: str) -> Any | None:
    """A function of the C library (its own object: set its argtypes freely; `ctypes.get_errno`
    reads its errno), or None where there is none by that name (not glibc: musl has no
    malloc_trim)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name, use_errno=True), symbol)
    except (OSError, AttributeError):
        return None


def libc_trim() -> Callable[[], None] | None:
    trim = libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)

    return run


class IdleTrim:
    """Counts work in progress; a daemon thread trims the heap `idle` seconds after the last
    piece of work ends (once per busy spell; never when `idle` <= 0), after `release` (what
    holds batch memory outside malloc's heap: OpenVINO's compiled models). Use as a context
    manager around each run."""

    def __init__(
        self,
        idle: float = 1.0,
        trim: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.idle = idle
        self._trim = trim if trim is not None else libc_trim()
        self._release = release
        self._clock = clock
        self._cv = threading.Condition()
        self._active = 0
        self._dirty = False  # work ended since the last trim
        self._last_end = 0.0
        self.trims = 0
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim_now(self) -> None:
        """Give malloc's free pages back now, whatever the work in progress."""
        if self._trim is not None:
            self._trim()

    def start(self) -> None:
        if self._trim is not None and self.idle > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="idle-trim", daemon=True)
            self._thread.start()

    def __enter__(self) -> None:
        with self._cv:
            self._active += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cv:
            self._active -= 1
            self._last_end = self._clock()
            self._dirty = True
            self._cv.notify()

    def due(self) -> float | None:
        """Seconds until a trim is due (0: now), or None when there is nothing to trim."""
        with self._cv:
            if not self._dirty or self._active:
                return None
            return max(0.0, self._last_end + self.idle - self._clock())

    def trim_if_due(self) -> bool:
        with self._cv:
            if not self._dirty or self._active or self._clock() < self._last_end + self.idle:
                return False
            self._dirty = False
        if self._release is not None:
            self._release()
        if self._trim is not None:
            self._trim()
            self.trims += 1
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                wait = self.due()
                while wait is None:
                    self._cv.wait()
                    wait = self.due()
            if wait > 0:
                time.sleep(wait)
            try:
                self.trim_if_due()
            except Exception:  # never let housekeeping take the worker down
                log.exception("giving idle memory back failed")
