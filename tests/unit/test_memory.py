"""IdleTrim: heap trimmed once per busy spell, only after `idle` seconds without work."""

from __future__ import annotations

import resource
from collections.abc import Callable

import pytest

from embedder.catalog import STARTER
from embedder.memory import IdleTrim
from embedder.service import Service
from embedder.store.files import ModelStore
from tests.polling import wait_until


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_once_after_work_and_idle() -> None:
    calls: list[int] = []
    clock = _Clock()
    t = IdleTrim(idle=1.0, trim=lambda: calls.append(1), clock=clock)
    assert t.due() is None and not t.trim_if_due()  # nothing done yet
    with t:
        assert t.due() is None  # busy
    assert t.due() == pytest.approx(1.0)
    assert not t.trim_if_due()
    clock.now += 1.0
    assert t.trim_if_due() and calls == [1]
    clock.now += 10
    assert not t.trim_if_due() and calls == [1]  # nothing new since


def test_no_trim_while_a_run_is_in_progress() -> None:
    calls: list[int] = []
    clock = _Clock()
    t = IdleTrim(idle=0.5, trim=lambda: calls.append(1), clock=clock)
    with t:
        pass
    t.__enter__()  # a second request started
    clock.now += 5
    assert not t.trim_if_due() and calls == []
    t.__exit__(None, None, None)
    clock.now += 0.5
    assert t.trim_if_due() and calls == [1]


def test_work_that_raises_still_counts_as_ended() -> None:
    clock = _Clock()
    t = IdleTrim(idle=0.0, trim=lambda: None, clock=clock)
    with pytest.raises(ValueError), t:
        raise ValueError("bad input")
    assert t.trim_if_due()


def test_the_thread_trims_after_idle_with_real_malloc_trim() -> None:
    real = IdleTrim(idle=0.05)
    if not real.available:
        pytest.skip("no glibc malloc_trim here")
    real.start()
    with real:
        blobs = [bytearray(1 << 20) for _ in range(32)]  # freed below: something to give back
        del blobs
    wait_until("the idle trim", lambda: real.trims > 0)
    assert real.trims == 1


def test_limit_arenas_takes_effect_where_there_is_glibc() -> None:
    import platform

    from embedder.memory import limit_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert limit_arenas(8)  # 8: glibc's own default scale, harmless for the other tests


def _trimming_service(store: ModelStore, model: str) -> Service:
    """A service of one starter model whose worker trims 50 ms after its last work."""
    spec = STARTER.get(model)
    store.ensure(spec)
    service = Service(STARTER, store, models=[spec.id], idle_trim=0.05)
    if not service.activity.available:
        pytest.skip("no glibc malloc_trim here")
    return service


def test_loading_counts_as_work_so_the_worker_trims_after_it(starter_store: ModelStore) -> None:
    """A worker that has loaded its models and not served anything yet still hands back what
    loading freed (graph parse buffers: ~0.2-0.4 GiB on the BGE-sized set)."""
    service = _trimming_service(starter_store, "paraphrase-minilm-l3-v2")
    service.start()
    assert service.wait(timeout=120) and service.state() == "ok", service.health()
    wait_until("the trim after loading", lambda: service.activity.trims > 0)
    service.stop()


def _faults_of(call: Callable[[], object]) -> int:
    """Minor page faults of the whole process (the run happens on a runner thread) over
    `call`: pages touched for the first time, or again after they went back to the system."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    call()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_lone_text_does_not_fault_its_activations_back_in(starter_store: ModelStore) -> None:
    """A lone text, again, and again after the worker's idle trim, through the real service:
    ORT's arena used to be shrunk after every run, handing the run's activation buffers back
    to malloc, so each run faulted them in again (all-minilm-l6-v2, one ~200-token text:
    up to ~550 pages back to back, ~1,000 after each idle trim; now under 30). Faults, not time:
    the count does not depend on the machine's speed or load."""
    spec = STARTER.get("all-minilm-l6-v2")
    service = _trimming_service(starter_store, spec.id)
    service.start()
    try:
        assert service.wait(timeout=120) and service.state() == "ok", service.health()
        text = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
        assert len(service.embed([text], spec).tokens) == 1
        warm = _faults_of(lambda: service.embed([text], spec))
        trims = service.activity.trims
        wait_until("the idle trim", lambda: service.activity.trims > trims)
        after_trim = _faults_of(lambda: service.embed([text], spec))
    finally:
        service.stop()
    assert warm < 150, f"a lone run faulted {warm} pages right after the same run"
    assert after_trim < 150, f"a lone run faulted {after_trim} pages after the idle trim"
