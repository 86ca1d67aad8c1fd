"""The loaded weights onto huge pages: dense anonymous ranges are collapsed, sparse ones are
left as they are (RSS must not grow), and a kernel or operator that says no changes nothing."""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder import hugepages as hp

PAGE = mmap.PAGESIZE
SIZE = hp.huge_page_size()


def _kernel_collapses() -> bool:
    return hp.thp_mode() in ("always", "madvise")


needs_thp = pytest.mark.skipif(
    not _kernel_collapses(), reason="transparent huge pages are off or absent here"
)


@pytest.fixture
def regions() -> Iterator[list[mmap.mmap]]:
    made: list[mmap.mmap] = []
    yield made
    for m in made:
        m.close()


def _region(made: list[mmap.mmap], touch_every: int) -> tuple[mmap.mmap, int]:
    """A private anonymous mapping of 4 huge pages' worth, every `touch_every`-th page written."""
    m = mmap.mmap(-1, 4 * SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    made.append(m)
    for off in range(0, len(m), PAGE * touch_every):
        m[off] = 1
    address = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return m, address


def _maps_line(start: int, end: int) -> str:
    return f"{start:x}-{end:x} rw-p 00000000 00:00 0 \n"


def _resident_pages(start: int, length: int) -> int:
    libc = hp._Libc()
    vec = ctypes.create_string_buffer(length // PAGE)
    assert libc.mincore(start, length, vec) == 0
    return sum(b & 1 for b in vec.raw)


def _anon_huge_kib(address: int) -> int:
    """AnonHugePages of the mapping that holds `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    raise AssertionError("no mapping holds the address")


def test_only_private_writable_anonymous_mappings_are_candidates() -> None:
    maps = (
        "55f8b0fc9000-55f8d416f000 rw-p 00000000 00:00 0                          [heap]\n"
        "7fd06f506000-7fd074e72000 rw-p 00000000 00:00 0 \n"
        "7fd08fce9000-7fd0918b5000 r-xp 00000000 fd:01 12 /usr/lib/libc.so.6\n"
        "7fd0918b5000-7fd091e8c000 rw-p 00000000 fd:01 13 /models/model.onnx\n"
        "7fd092000000-7fd092800000 rw-s 00000000 00:01 14 /dev/zero (deleted)\n"
        "7ffc1a000000-7ffc1a021000 rw-p 00000000 00:00 0                          [stack]\n"
        "7fd092800000-7fd096800000 ---p 00000000 00:00 0 \n"
    )
    assert list(hp.anonymous_regions(maps)) == [
        (0x55F8B0FC9000, 0x55F8D416F000),
        (0x7FD06F506000, 0x7FD074E72000),
    ]


def test_only_whole_aligned_ranges_inside_a_region() -> None:
    two = 2 << 20
    assert list(hp.aligned_ranges(two - 4096, 4 * two + 4096, two)) == [two, 2 * two, 3 * two]
    assert list(hp.aligned_ranges(two + 4096, 3 * two - 4096, two)) == []


def test_the_mode_is_read_from_the_kernels_switch(tmp_path: Path) -> None:
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert hp.thp_mode(tmp_path) == "madvise"
    assert hp.thp_mode(tmp_path / "absent") is None


def test_nothing_is_tried_where_the_operator_turned_them_off(tmp_path: Path) -> None:
    (tmp_path / "enabled").write_text("always madvise [never]\n")
    result = hp.collapse(
        trim=lambda: pytest.fail("trimmed although nothing is tried"), root=tmp_path
    )
    assert result.skipped and "never" in result.skipped
    assert result.ranges == 0
    assert hp.collapse(root=tmp_path / "absent").skipped


@needs_thp
def test_a_dense_region_is_collapsed_onto_huge_pages(
    tmp_path: Path, regions: list[mmap.mmap]
) -> None:
    m, start = _region(regions, touch_every=1)
    maps = tmp_path / "maps"
    maps.write_text(_maps_line(start, start + len(m)))
    before = _anon_huge_kib(start)
    trims: list[int] = []
    result = hp.collapse(str(maps), trim=lambda: trims.append(1))
    assert result.skipped is None, result.skipped
    aligned = len(list(hp.aligned_ranges(start, start + len(m), SIZE)))
    assert result.ranges + result.failed == aligned
    assert result.ranges >= 1, "the kernel collapsed none of the dense ranges"
    assert _anon_huge_kib(start) - before >= result.ranges * SIZE // 1024
    assert trims == [1]
    assert m[0] == 1 and m[len(m) - PAGE] == 1  # the contents stay


@needs_thp
def test_a_sparse_region_is_left_alone(tmp_path: Path, regions: list[mmap.mmap]) -> None:
    """Collapsing a range fills its missing pages: RSS would grow by what was never used."""
    m, start = _region(regions, touch_every=2)
    maps = tmp_path / "maps"
    maps.write_text(_maps_line(start, start + len(m)))
    resident = _resident_pages(start, len(m))
    result = hp.collapse(str(maps))
    assert result.skipped is None and result.ranges == 0
    assert _resident_pages(start, len(m)) == resident
    assert _anon_huge_kib(start) == 0
