"""A lone text on OpenVINO after the worker's idle spell: the compiled model's memory is given
back only once a large run grew it, so what a lone text needs stays (page faults, not time:
the count does not depend on the machine's speed or load)."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.catalog import STARTER
from embedder.loading import Opener
from embedder.memory import IdleTrim, libc_trim
from embedder.planning import RunLimits
from embedder.service import Service
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore

pytest.importorskip("openvino")

MODEL = STARTER.get("all-minilm-l6-v2")


@pytest.fixture
def root(tmp_path: Path, starter_service: Service) -> Path:
    """A models root of its own (the compiled model is kept in it), the built files linked."""
    shared = starter_service.store.root / MODEL.id
    (tmp_path / MODEL.id).mkdir()
    for f in MODEL.files:
        if (shared / f.name).is_file():
            (tmp_path / MODEL.id / f.name).symlink_to(shared / f.name)
    return tmp_path


def _faults_of(call: Callable[[], object]) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    call()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_lone_text_after_the_idle_release_does_not_fault_its_memory_back_in(
    root: Path,
) -> None:
    """Releasing after every idle spell made the first lone texts after it fault their
    intermediate memory in again (all-minilm-l6-v2, one ~200-token text: ~780 pages;
    bge-base-sized: 100-1,100 pages by length). A large batch still gives its memory back
    (test_runtimes.test_openvino_batch_memory_goes_back_when_the_worker_is_idle)."""
    trim = libc_trim()
    if trim is None:
        pytest.skip("no glibc malloc_trim here")
    rt = Runtimes(BackendPolicy("openvino"), ModelStore(root, STARTER, offline=True))
    opener = Opener(rt.store, SessionConfig(threads=1), RunLimits(), runtimes=rt)
    embedding = opener.embedding(MODEL)
    runtime = rt.runtime(MODEL.id)
    assert runtime is not None and runtime.backend == "openvino"
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    for _ in range(2):
        embedding.embed([text])
    now = [0.0]
    idle = IdleTrim(1.0, trim, lambda: now[0], release=rt.release)  # as the worker's
    with idle:
        pass
    now[0] = 2.0
    assert idle.trim_if_due()
    faults = _faults_of(lambda: embedding.embed([text]))
    assert faults < 150, f"a lone run faulted {faults} pages after the idle release"
