"""OpenVINO's compiled-model cache stays flat: a folder per graph file version and precision,
stale blobs and the folders of file versions gone removed, never a folder a live process
holds, and a compile that fails with the cache done without it. Real OpenVINO on a tiny graph
in a temporary root (never the shared test models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from embedder.backends import compiled_cache
from embedder.backends import openvino as ov
from embedder.sessions import SessionConfig
from tests.unit.prepare.test_weights_int8 import tiny_graph

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    return tiny_graph(tmp_path / "models" / "tiny" / "model.onnx")


def cache_of(graph: Path) -> Path:
    cache = ov.cache_dir(graph.parents[1])
    assert cache is not None
    return cache


def open_it(graph: Path, precision: str = "fp32") -> ov.OpenVinoSession:
    return ov.open_openvino(graph, SessionConfig(), precision, cache_of(graph))


def listing(cache: Path) -> dict[str, list[str]]:
    """Each folder of the cache and its blobs (lock files and records left out)."""
    return {p.name: sorted(b.name for b in p.glob("*.blob")) for p in cache.iterdir() if p.is_dir()}


def new_version(graph: Path, seed: int) -> None:
    """Another FP32 graph at the same path, as a pull of a newer file would leave it."""
    tiny_graph(graph, seed=seed)
    os.utime(graph, ns=(seed * 10**9, seed * 10**9))


def open_elsewhere(graph: Path, hold: bool = False) -> subprocess.Popen[str]:
    """Another worker: opens `graph` on the same root, then (with `hold`) keeps running until
    its stdin closes."""
    code = (
        "import sys; from pathlib import Path\n"
        "from embedder.backends import openvino as ov\n"
        "from embedder.sessions import SessionConfig\n"
        "g = Path(sys.argv[1])\n"
        "ov.open_openvino(g, SessionConfig(), 'fp32', ov.cache_dir(g.parents[1]))\n"
        "print('open', flush=True)\n"
        "if sys.argv[2] == 'hold': sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(graph), "hold" if hold else "go"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    return proc


def test_a_folder_per_file_version_and_precision_with_one_blob(graph: Path) -> None:
    cache = cache_of(graph)
    open_it(graph)
    open_it(graph)  # imported: nothing more
    open_it(graph, "bf16")
    folders = listing(cache)
    assert sorted(folders) == sorted(compiled_cache.folder_name(graph, p) for p in ("fp32", "bf16"))
    assert all(len(blobs) == 1 for blobs in folders.values()), folders
    record = json.loads(
        (cache / compiled_cache.folder_name(graph, "fp32") / "source.json").read_text()
    )
    assert record["graph"] == str(graph.resolve()) and record["precision"] == "fp32"


def test_a_compile_that_writes_a_blob_removes_the_folders_stale_ones(graph: Path) -> None:
    """An OpenVINO upgrade or a new CPU: the compile writes a blob under a new name, and the
    blob the old one wrote will never be imported again."""
    cache = cache_of(graph)
    folder = cache / compiled_cache.folder_name(graph, "fp32")
    folder.mkdir(parents=True)
    (folder / "1234567890.blob").write_bytes(b"an earlier version's compiled model")
    open_it(graph)
    assert len(listing(cache)[folder.name]) == 1
    assert not (folder / "1234567890.blob").exists()


def test_the_flat_layouts_blobs_go(graph: Path) -> None:
    cache = cache_of(graph)
    (cache / "98765.blob").write_bytes(b"compiled by an earlier version of the service")
    open_it(graph)
    assert not (cache / "98765.blob").exists()


def test_the_folder_of_a_file_version_gone_goes_once_no_process_holds_it(graph: Path) -> None:
    cache = cache_of(graph)
    old = compiled_cache.folder_name(graph, "fp32")
    worker = open_elsewhere(graph, hold=True)  # a live worker on the first version
    try:
        new_version(graph, 1)
        open_elsewhere(graph).wait(60)  # a start on the new version (it ends: no lock held)
        new = compiled_cache.folder_name(graph, "fp32")
        assert new != old and sorted(listing(cache)) == sorted([old, new]), "in use: kept"
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(60)
    new_version(graph, 2)  # the next start after that worker ended
    open_elsewhere(graph).wait(60)
    assert sorted(listing(cache)) == [compiled_cache.folder_name(graph, "fp32")]
    assert sorted(p.name for p in cache.iterdir() if not p.is_dir()) == [
        f"{compiled_cache.folder_name(graph, 'fp32')}.lock"
    ], "no lock file left of the folders removed"


def test_a_folder_unused_for_long_goes_and_one_used_lately_stays(graph: Path) -> None:
    """A precision no longer asked for (EMBEDDER_EXACT_FP32 turned on for good): its folder's
    file is still there, but no start opens it any more."""
    cache = cache_of(graph)
    open_elsewhere(graph).wait(60)  # its lock is free once that process ended
    folder = cache / compiled_cache.folder_name(graph, "fp32")
    assert compiled_cache.prune(cache) == []
    long_ago = time.time() - (compiled_cache.UNUSED_DAYS + 1) * 86400
    os.utime(folder / compiled_cache.RECORD, (long_ago, long_ago))
    assert compiled_cache.prune(cache) == [folder.name]  # with its lock file
    assert list(cache.iterdir()) == []


def test_a_compile_that_fails_with_the_cache_is_done_without_it(
    graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands for a blob another process removes or rewrites just as this one opens it (a
    race that cannot be timed here): the start compiles instead of failing."""
    core = ov._core()
    real = core.compile_model

    class Racing:
        def __getattr__(self, name: str) -> Any:
            return getattr(core, name)

        def compile_model(self, path: str, device: str, props: dict[str, Any]) -> Any:
            if "CACHE_DIR" in props:
                raise RuntimeError(
                    "Exception from src/inference/src/dev/core_impl.cpp:1\nblob gone"
                )
            return real(path, device, props)

    monkeypatch.setattr(ov, "_core", Racing)
    session = open_it(graph)
    assert session.compute_precision == "fp32"
