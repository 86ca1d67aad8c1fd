"""The kernel's names for this process's Python threads, so per-thread CPU read from outside
(`top -H`, /proc/PID/task/TID/comm, the benchmark's service CPU per lone text) says which
thread took it: otherwise every thread carries the process's name."""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from pathlib import Path


def short(name: str) -> bytes:
    """`name` in the kernel's 15 bytes: a long one keeps its head and its tail, so the runners
    of one model (`batcher-<model>-<k>`) stay told apart, and a digest of the whole, so those of
    models whose names share head and tail do too (a name held by an older thread reads as a
    library's thread in the bench)."""
    raw = name.encode()
    if len(raw) <= 15:
        return raw
    return raw[:8] + f"{zlib.crc32(raw) & 0xFF:02x}".encode() + b"~" + raw[-4:]


def name_native(thread: threading.Thread) -> None:
    """Give `thread`'s OS thread its Python name (`short`). The main thread
    keeps the process's name (ps and top show it); on a system without /proc, nothing."""
    tid = thread.native_id
    if tid is None or tid == os.getpid():
        return
    with contextlib.suppress(OSError):  # not Linux, or the thread has just ended
        Path(f"/proc/self/task/{tid}/comm").write_bytes(short(thread.name))


def name_all() -> None:
    """Every live Python thread (called once the long-lived ones are started)."""
    for thread in threading.enumerate():
        name_native(thread)


def name_current() -> None:
    """The calling thread (a pool's initializer)."""
    name_native(threading.current_thread())
