"""Put the loaded models' weights on huge pages.

A lone text's run streams every weight once, so on 4 KiB pages its cost depends on where the
weights' pages fell: two identical sessions in one process ran several per cent apart, and a
worker's session ran slower than the bench's engine for no reason in the server's code
(docs/performance.md, "What grows with the model"). Transparent huge pages fix that, but in
the kernel's usual `madvise` mode malloc's memory, where the weights live, never gets them.

So once the models are in, every 2 MiB-aligned range of the process's private anonymous
memory whose pages are all resident is collapsed into a huge page (`MADV_COLLAPSE`, Linux
6.1). Weights are dense, so they qualify; a range with any page not resident is left alone,
so RSS does not grow. The ranges are not marked `MADV_HUGEPAGE`, so khugepaged never fills
sparse ones later, and a later `malloc_trim` that frees a page inside one splits it back as
the kernel does for any huge page. Where the operator or the kernel says no (THP `never`, a
kernel without the call, a container that disabled THP) nothing changes and one line says
why; a range the kernel cannot collapse now (no free huge page) stays as it was.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.memory import libc_function

log = logging.getLogger(__name__)

MADV_COLLAPSE = 25  # <linux/mman.h>, since Linux 6.1
THP = Path("/sys/kernel/mm/transparent_hugepage")


@dataclass(frozen=True)
class Collapsed:
    """What one pass did: ranges now on huge pages (newly or already) and their bytes, ranges
    the kernel could not collapse now, and why nothing was tried (None when it was)."""

    ranges: int = 0
    failed: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    huge_bytes: int = 0


def thp_mode(root: Path = THP) -> str | None:
    """The kernel's transparent huge page mode (`always`, `madvise`, `never`), None without."""
    try:
        text = (root / "enabled").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def huge_page_size(root: Path = THP) -> int:
    """The PMD huge page size (2 MiB on x86-64; larger with 64 KiB base pages)."""
    try:
        return int((root / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 2 << 20


def anonymous_regions(maps: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each private, writable, anonymous mapping in a /proc/PID/maps text:
    malloc's heap and its mmaps, where the runtimes keep the weights. Stacks and files are
    not candidates."""
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[1] != "rw-p":
            continue
        name = parts[5] if len(parts) > 5 else ""
        if name not in ("", "[heap]"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        yield start, end


def aligned_ranges(start: int, end: int, size: int) -> Iterator[int]:
    """Starts of the `size`-aligned ranges of `size` bytes that lie wholly in [start, end)."""
    first = (start + size - 1) & ~(size - 1)
    yield from range(first, end - size + 1, size)


class _Libc:
    """madvise and mincore, typed; OSError where the C library lacks either."""

    def __init__(self) -> None:
        madvise, mincore = libc_function("madvise"), libc_function("mincore")
        if madvise is None or mincore is None:
            raise OSError("the C library has no madvise or mincore")
        self.madvise: Any = madvise
        self.mincore: Any = mincore
        self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.madvise.restype = ctypes.c_int
        self.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        self.mincore.restype = ctypes.c_int


def _resident(libc: _Libc, start: int, size: int, vec: Any) -> bool:
    """Every page of [start, start + size) is in memory (mincore's low bit per page)."""
    if libc.mincore(start, size, vec) != 0:
        return False
    return all(byte & 1 for byte in vec.raw)


def collapse(
    maps_path: str = "/proc/self/maps",
    *,
    trim: Callable[[], None] | None = None,
    root: Path = THP,
) -> Collapsed:
    """Collapse the dense anonymous ranges of this process into huge pages. `trim` (malloc's)
    runs first, so pages malloc holds free are given back rather than counted as dense."""
    mode = thp_mode(root)
    if mode is None:
        return Collapsed(skipped="the kernel has no transparent huge pages")
    if mode == "never":
        return Collapsed(skipped="transparent huge pages are off (never)")
    try:
        libc = _Libc()
    except OSError as exc:
        return Collapsed(skipped=str(exc))
    began = time.perf_counter()
    if trim is not None:
        trim()
    size = huge_page_size(root)
    vec = ctypes.create_string_buffer(size // os.sysconf("SC_PAGE_SIZE"))
    with open(maps_path) as f:
        regions = list(anonymous_regions(f.read()))
    done = failed = 0
    for start, end in regions:
        for at in aligned_ranges(start, end, size):
            if not _resident(libc, at, size, vec):
                continue
            if libc.madvise(at, size, MADV_COLLAPSE) == 0:
                done += 1
                continue
            err = ctypes.get_errno()
            if err == errno.EINVAL and done == 0 and failed == 0:  # no such call, or disabled
                return Collapsed(skipped=f"the kernel cannot collapse: {os.strerror(err)}")
            failed += 1
    return Collapsed(done, failed, time.perf_counter() - began, huge_bytes=done * size)


def weights_on_huge_pages(trim: Callable[[], None] | None = None) -> Collapsed:
    """`collapse`, logged once: what is now on huge pages, or why nothing is."""
    result = collapse(trim=trim)
    if result.skipped:
        log.info("weights stay on small pages: %s", result.skipped)
    else:
        log.info(
            "%d MiB on huge pages in %.1fs (%d ranges not collapsed now)",
            result.huge_bytes >> 20,
            result.seconds,
            result.failed,
        )
    return result
