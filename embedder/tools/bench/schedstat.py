"""CPU time of another process's threads, read from /proc (Linux): what a gunicorn worker spent
on the CPU, thread by thread, between two readings.

CPU time rather than wall time: on a shared machine a request's latency moves by milliseconds
with the other processes' load, while the CPU the worker itself burns for it barely does.
`schedstat`'s first field is the thread's time on the CPU in nanoseconds (the scheduler's own
count, not the tick-sampled utime/stime).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")

# What a worker's threads do, by their native names (the service names its Python threads;
# the main thread is gunicorn's loop: accepting, polling keep-alive connections). Threads a
# library starts outside Python (the tokenizer's pool, ORT's) inherit the name of the thread
# that started them: a name held by an older thread marks them ("native").
ROLES = ("http", "runners", "main", "native", "other")

Threads = dict[tuple[int, int], tuple[str, int]]  # (pid, tid) -> (role, ns on the CPU)


def role(pid: int, tid: int, comm: str, inherited: bool = False) -> str:
    """Which part of the worker a thread is: its request threads (`http-*`), the models'
    runners (`batcher-*`), gunicorn's loop (the main thread), a library's native thread
    (`inherited`: its name is an older thread's) or anything else."""
    if tid == pid:
        return "main"
    if inherited:
        return "native"
    if comm.startswith("http-"):
        return "http"
    if comm.startswith("batcher-"):
        return "runners"
    return "other"


def thread_ns(pid: int, tid: int) -> int | None:
    """Nanoseconds thread `tid` of `pid` has spent on the CPU; None once it has ended."""
    try:
        raw = (PROC / str(pid) / "task" / str(tid) / "schedstat").read_text()
    except OSError:
        return None
    first = raw.split(maxsplit=1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def threads(pids: Iterable[int]) -> Threads:
    """Every live thread of `pids`, with its role and CPU time so far."""
    out: Threads = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(PROC / str(pid) / "task") if t.isdigit()]
        except OSError:
            continue  # the process has gone
        seen: set[str] = set()
        for tid in sorted(tids):  # oldest first: thread ids grow
            try:
                comm = (PROC / str(pid) / "task" / str(tid) / "comm").read_text().strip()
            except OSError:
                continue
            ns = thread_ns(pid, tid)
            if ns is not None:
                out[(pid, tid)] = (role(pid, tid, comm, comm in seen and tid != pid), ns)
            seen.add(comm)
    return out


def used(before: Mapping[tuple[int, int], tuple[str, int]], after: Threads) -> dict[str, int]:
    """Nanoseconds on the CPU between two readings, by role. A thread started in between counts
    whole; one that ended in between is lost (the worker's threads live as long as it does)."""
    out = dict.fromkeys(ROLES, 0)
    for key, (name, ns) in after.items():
        out[name] = out.get(name, 0) + ns - before.get(key, (name, 0))[1]
    return out


def quiet(
    pids: Callable[[], Iterable[int]],
    *,
    share: float = 0.05,
    window: float = 1.5,
    bound: float = 120.0,
) -> bool:
    """Wait until the processes `pids()` names used under `share` of one CPU over a `window`
    of seconds: what a worker does once it answers (the weights' move onto huge pages, the
    idle trim a second after the last request) is over before anything is measured. False
    if they were still busy after `bound` seconds (then measure anyway, and say so)."""
    end = time.monotonic() + bound
    while True:
        before = threads(pids())
        time.sleep(window)
        busy = sum(used(before, threads(pids())).values()) / 1e9
        if busy < share * window:
            return True
        if time.monotonic() > end:
            return False
