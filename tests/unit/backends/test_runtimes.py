"""Which runtime serves a model, on the real starter files and the real runtimes: `auto` with
injected timings (the clock is not what is tested here), the fidelity guard on a candidate
whose output is off, the kept choice, and every fallback to ONNX Runtime."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from embedder.backends import forms
from embedder.backends import openvino as ov
from embedder.backends import runtimes as runtimes_mod
from embedder.backends.cache import ChoiceCache
from embedder.backends.calibration import embedding_probe
from embedder.backends.choice import MIN_COSINE_INT8, Runtime, fidelity
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.batcher import Batcher
from embedder.catalog import STARTER
from embedder.encoder import Embedding
from embedder.loading import Opener
from embedder.memory import IdleTrim, libc_trim
from embedder.planning import RunLimits
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer

PARA = STARTER.get("paraphrase-minilm-l3-v2")  # its files are read inside its package
INT8 = STARTER.get("all-minilm-l6-v2-int8")
TEXTS = ["a lone query about the weather", "another text " * 30, "kurz"]


Runs = Mapping[str, Callable[[], object]]
Timer = Callable[[Runs, float, Callable[[], float]], dict[str, float]]


def fixed(**seconds: float) -> Timer:
    """A timer that runs each candidate once and says it took `seconds[backend]`."""

    def timer(runs: Runs, budget: float, clock: Callable[[], float]) -> dict[str, float]:
        for run in runs.values():
            run()
        return {label: seconds[label.split()[0]] for label in runs}

    return timer


def never(runs: Runs, budget: float, clock: Callable[[], float]) -> dict[str, float]:
    raise AssertionError("measured again")


OV_FASTER = fixed(onnxruntime=0.010, openvino=0.005)


@pytest.fixture
def root(tmp_path: Path, starter_service: Service) -> Path:
    """A models root of its own (the choice and the compiled models are kept in it), its
    built starter files linked from the shared root."""
    shared = starter_service.store.root
    for spec in STARTER:
        for f in spec.files:
            src = shared / spec.id / f.name
            if src.is_file():
                (tmp_path / spec.id).mkdir(exist_ok=True)
                (tmp_path / spec.id / f.name).symlink_to(src)
    return tmp_path


def runtimes(root: Path, backend: str = "auto", **kw: Any) -> Runtimes:
    """BF16 and integer dot-product units are off unless a test says (a CI CPU may have
    them: each adds candidates and changes what a level computes in)."""
    kw.setdefault("int8", False)
    kw.setdefault("bf16", False)
    return Runtimes(BackendPolicy(backend), ModelStore(root, STARTER, offline=True), **kw)


def serve(rt: Runtimes, spec=PARA, runners: int = 2) -> Embedding:
    return Opener(rt.store, SessionConfig(threads=runners), RunLimits(), runtimes=rt).embedding(
        spec
    )


def reference(root: Path, spec=PARA) -> np.ndarray:
    return serve(runtimes(root, "onnxruntime"), spec).embed(TEXTS).vectors


def sessions_of(embedding: Embedding) -> set[int]:
    assert isinstance(embedding.runner, Batcher)
    return {id(e.session) for e in embedding.runner._engines}  # type: ignore[attr-defined]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_takes_openvino_where_it_measures_faster(root: Path) -> None:
    rt = runtimes(root, timer=OV_FASTER)
    served = serve(rt, runners=2)
    runtime = rt.runtime(PARA.id)
    assert runtime is not None and runtime.backend == "openvino"
    (session_id,) = sessions_of(served)  # one compiled model shared by both runners
    session = served.encoder.session  # type: ignore[attr-defined]
    assert id(session) == session_id and isinstance(session, ov.OpenVinoSession)
    assert runtime.compute_precision == session.compute_precision
    compiled = session.compiled
    assert compiled.get_property("NUM_STREAMS") == 2  # a stream per runner
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2  # a thread per core, no pinning
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert fidelity(reference(root), served.embed(TEXTS).vectors) >= 0.9999
    kept = json.loads(ChoiceCache(root).path(PARA.id).read_text())
    (entry,) = kept.values()
    assert entry["choice"]["backend"] == "openvino"
    assert (root / ov.CACHE_DIR).is_dir() and any((root / ov.CACHE_DIR).iterdir())


def test_auto_keeps_onnxruntime_unless_clearly_faster(root: Path) -> None:
    rt = runtimes(root, timer=fixed(onnxruntime=0.010, openvino=0.0099))
    serve(rt)
    assert rt.runtime(PARA.id) == Runtime("onnxruntime", "fp32")


def test_the_kept_choice_opens_without_measuring_until_a_file_changes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(runtimes(root, timer=OV_FASTER))
    again = runtimes(root, timer=never)  # a restart, or a sibling worker
    served = serve(again)
    assert again.runtime(PARA.id) is not None
    assert again.runtime(PARA.id).backend == "openvino"  # type: ignore[union-attr]
    assert served.embed(TEXTS).vectors.shape == (3, 384)
    monkeypatch.setattr(runtimes_mod, "file_key", lambda path: f"{path.name}:rebuilt")
    changed = runtimes(root, timer=fixed(onnxruntime=0.005, openvino=0.010))
    serve(changed)
    assert changed.runtime(PARA.id) == Runtime("onnxruntime", "fp32")  # measured anew


class Skewed:
    """A candidate whose output is off by a few per cent (a broken conversion)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.compute_precision = "bf16"

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        out = self.inner.run(outputs, feeds)
        noise = np.random.default_rng(0).normal(0.0, 0.05, out[0].shape).astype(np.float32)
        return [out[0] * (1.0 + noise), *out[1:]]

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()


def skewed(path: Path, config: SessionConfig, precision: str) -> Skewed:
    return Skewed(open_session(path, config))


def test_the_fidelity_guard_rejects_a_faster_candidate_whose_output_is_off(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtimes(root, timer=OV_FASTER, openers={"openvino": skewed})
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        served = serve(rt)
    assert rt.runtime(PARA.id) == Runtime("onnxruntime", "fp32")
    assert not any(isinstance(e.session, Skewed) for e in served.runner._engines)  # type: ignore[attr-defined]
    (line,) = warnings(caplog)  # one line says it all
    assert PARA.id in line and "min cosine" in line and "onnxruntime fp32" in line
    (entry,) = json.loads(ChoiceCache(root).path(PARA.id).read_text()).values()
    assert entry["choice"]["backend"] == "onnxruntime"


def test_without_the_openvino_package_every_model_runs_on_onnxruntime(
    root: Path, no_openvino: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        rt = runtimes(root, timer=never)
        serve(rt)
        serve(rt, INT8)
    assert rt.runtime(PARA.id) == Runtime("onnxruntime", "fp32")
    assert rt.runtime(INT8.id) == Runtime("onnxruntime", "int8")
    (line,) = warnings(caplog)  # said once for the worker, not per model
    assert "openvino" in line and "not installed" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        forced = runtimes(root, "openvino")
        serve(forced)
    assert forced.runtime(PARA.id) == Runtime("onnxruntime", "fp32")
    (line,) = warnings(caplog)
    assert PARA.id in line and "not installed" in line


def test_the_service_imports_and_starts_without_the_openvino_package(root: Path) -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "import embedder.server.bootstrap, embedder.service, embedder.backends.runtimes\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_graph_openvino_cannot_read_falls_back_with_one_line(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The INT8 recipe's file has com.microsoft operators OpenVINO does not read; served as
    if it were an FP32 level, OpenVINO is a candidate for it and must fail cleanly."""
    recipe = ModelStore(root, STARTER, offline=True).path(INT8, "model_int8.onnx")
    with pytest.raises(ov.Unavailable, match=r"com\.microsoft"):
        ov.open_openvino(recipe, SessionConfig(), "fp32")
    as_fp32 = replace(INT8, precision="fp32")
    for backend in ("openvino", "auto"):
        caplog.clear()
        rt = runtimes(root, backend, timer=OV_FASTER)
        with caplog.at_level(logging.INFO, logger="embedder.backends"):
            served = serve(rt, as_fp32)
        assert rt.runtime(INT8.id) == Runtime("onnxruntime", "fp32"), backend
        (line,) = warnings(caplog)
        assert "com.microsoft" in line, line
        assert served.embed(TEXTS).vectors.shape == (3, 384)


def test_an_int8_level_computes_in_bf16_of_its_fp32_file_where_that_is_faster(
    root: Path,
) -> None:
    """Where the CPU has BF16 units (injected here: this test passes on any CPU, where
    OpenVINO then says it computes in FP32, and the report says what it says)."""
    rt = runtimes(root, timer=OV_FASTER, bf16=True)
    served = serve(rt, INT8)
    runtime = rt.runtime(INT8.id)
    assert runtime is not None and runtime.backend == "openvino"
    session = served.encoder.session  # type: ignore[attr-defined]
    assert runtime.compute_precision == session.compute_precision in ("bf16", "fp32")
    assert rt.chosen[INT8.id].graph.name == "model.onnx"  # the FP32 source, not the recipe's
    fp32 = reference(root, STARTER.get("all-minilm-l6-v2"))
    assert fidelity(fp32, served.embed(TEXTS).vectors) >= 0.9999
    (entry,) = json.loads(ChoiceCache(root).path(INT8.id).read_text()).values()
    assert set(entry["key"]["files"]) == {"own", "fp32"}


def test_forcing_openvino_on_an_int8_level_without_bf16_units_keeps_the_int8_file(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtimes(root, "openvino", bf16=False)
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        serve(rt, INT8)
    assert rt.runtime(INT8.id) == Runtime("onnxruntime", "int8")
    (line,) = warnings(caplog)
    assert "an INT8 level has no OpenVINO form here" in line


def test_forcing_openvino_serves_the_same_vectors(root: Path) -> None:
    rt = runtimes(root, "openvino", timer=never)
    served = serve(rt, runners=3)
    assert rt.runtime(PARA.id) is not None
    assert rt.runtime(PARA.id).backend == "openvino"  # type: ignore[union-attr]
    assert len(sessions_of(served)) == 1
    assert fidelity(reference(root), served.embed(TEXTS).vectors) >= 0.9999


def test_the_onnxruntime_setting_never_asks_for_openvino(
    root: Path, no_openvino: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        rt = runtimes(root, "onnxruntime", timer=never)
        serve(rt)
    assert rt.runtime(PARA.id) == Runtime("onnxruntime", "fp32")
    assert not warnings(caplog)


def test_an_openvino_session_serves_more_concurrent_runs_than_streams(root: Path) -> None:
    session = ov.open_openvino(
        ModelStore(root, STARTER, offline=True).path(PARA, "model.onnx"),
        SessionConfig(threads=1, streams=2),
        "fp32",
    )
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    names = [p.name for p in session.get_outputs()]
    want = session.run(names[:1], feeds)[0]
    got: list[np.ndarray] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait(timeout=30)
        for _ in range(5):
            got.append(session.run(names[:1], feeds)[0])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 20
    for g in got:
        np.testing.assert_array_equal(g, want)
    assert len(session._idle) <= 2  # the pool keeps a request per stream


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_openvino_batch_memory_goes_back_when_the_worker_is_idle(root: Path) -> None:
    """A compiled model keeps the intermediate memory of its largest batch until released
    (measured: +530 MiB kept after a 128 x 256 batch of MiniLM); the idle trim releases it."""
    rt = runtimes(root, "openvino")
    session = serve(rt, runners=1).encoder.session  # type: ignore[attr-defined]
    assert isinstance(session, ov.OpenVinoSession)
    ids = np.random.default_rng(0).integers(1000, 20000, (64, 256)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    output = next(p.name for p in session.get_outputs() if len(p.shape) == 3)
    session.run([output], {k: v[:1, :8] for k, v in feeds.items()})
    before = _rss()
    session.run([output], feeds)
    grown = _rss() - before
    assert grown > 64 * 2**20, "the batch should need memory to give back"
    session._busy = 1  # a run under way: nothing is released under it
    assert session.release() is False
    session._busy = 0
    calls: list[str] = []
    heap_trim = libc_trim()  # as the service trims: what was freed goes back to the system

    def trimmed() -> None:
        calls.append("trim")
        if heap_trim is not None:
            heap_trim()

    now = [0.0]
    trim = IdleTrim(1.0, trimmed, lambda: now[0], release=rt.release)
    with trim:
        pass
    now[0] = 2.0
    assert trim.trim_if_due() and calls == ["trim"]
    assert _rss() - before < grown / 2, (grown, _rss() - before)


class Broken(Skewed):
    """A candidate that opens but cannot run (a graph OpenVINO reads and then rejects)."""

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        raise RuntimeError("Exception from src/plugins/intel_cpu: cannot infer shape")


def test_forced_openvino_that_opens_but_cannot_run_falls_back(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: Path, config: SessionConfig, precision: str) -> Broken:
        return Broken(open_session(path, config))

    rt = runtimes(root, "openvino", openers={"openvino": broken})
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        served = serve(rt)
    assert rt.runtime(PARA.id) == Runtime("onnxruntime", "fp32")
    (line,) = warnings(caplog)
    assert "cannot infer shape" in line and "EMBEDDER_BACKEND=openvino" in line
    assert served.embed(TEXTS).vectors.shape == (3, 384)


def test_injected_bf16_units_without_the_package_still_fall_back(
    root: Path, no_openvino: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        rt = runtimes(root, bf16=True, timer=never)
        serve(rt, INT8)
    assert rt.runtime(INT8.id) == Runtime("onnxruntime", "int8")
    (line,) = warnings(caplog)
    assert "not installed" in line


def test_single_thread_runs_are_timed_in_cpu_time_and_wider_ones_in_wall_time(
    root: Path,
) -> None:
    clocks: list[Callable[[], float]] = []

    def spy(runs: Runs, budget: float, clock: Callable[[], float]) -> dict[str, float]:
        clocks.append(clock)
        return OV_FASTER(runs, budget, clock)

    serve(runtimes(root, timer=spy), runners=2)  # the runner layout: a thread per run
    # A session with a thread per core (the service opens none now; the runtimes still time
    # one right if asked).
    wide = Opener(
        ModelStore(root, STARTER, offline=True),
        SessionConfig(threads=2),
        RunLimits(),
        runtimes=runtimes(root, timer=spy),
    )
    assert PARA.tokenizer
    tok = load_tokenizer(wide.store.path(PARA, PARA.tokenizer), PARA.max_tokens)
    wide._session(PARA, SessionConfig(threads=2), embedding_probe(PARA, tok, RunLimits()))
    assert clocks == [time.process_time, time.perf_counter]


def test_an_int8_level_whose_fp32_source_is_gone_keeps_its_int8_file(root: Path) -> None:
    (root / "all-minilm-l6-v2" / "model.onnx").unlink()  # the INT8 file stays
    rt = runtimes(root, bf16=True, timer=never)
    assert [c.label for c in rt.candidates(INT8)] == ["onnxruntime int8"]
    serve(rt, INT8)
    assert rt.runtime(INT8.id) == Runtime("onnxruntime", "int8")


def test_an_int8_level_takes_openvinos_int8_form_where_it_measures_faster(root: Path) -> None:
    """Where the CPU has integer dot-product units (injected: OpenVINO quantizes the
    activations only there; elsewhere it runs the same weights in FP32, and the guard and
    the kept choice work alike)."""
    rt = runtimes(root, timer=OV_FASTER, int8=True)
    assert [c.label for c in rt.candidates(INT8)] == ["onnxruntime int8", "openvino int8"]
    served = serve(rt, INT8)
    runtime = rt.runtime(INT8.id)
    assert runtime == Runtime("openvino", "int8")  # its matrix products read int8 weights
    built = rt.chosen[INT8.id].graph
    assert built == root / INT8.id / forms.INT8_WEIGHTS
    fp32 = reference(root, STARTER.get("all-minilm-l6-v2"))
    assert fidelity(fp32, served.embed(TEXTS).vectors) >= MIN_COSINE_INT8
    (entry,) = json.loads(ChoiceCache(root).path(INT8.id).read_text()).values()
    assert entry["key"]["files"]["int8-weights"].startswith(forms.RECIPE)
    # a restart opens the kept choice on the form it built, without measuring or building
    stamp = built.stat().st_mtime_ns
    again = runtimes(root, timer=never, int8=True)
    serve(again, INT8)
    assert again.runtime(INT8.id) == runtime and built.stat().st_mtime_ns == stamp


def test_an_int8_form_that_cannot_be_built_leaves_the_int8_file_serving(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(src: Path, out: Path) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(forms, "quantize_weights_int8", fails)
    rt = runtimes(root, timer=OV_FASTER, int8=True)
    with caplog.at_level(logging.INFO, logger="embedder.backends"):
        served = serve(rt, INT8)
    assert rt.runtime(INT8.id) == Runtime("onnxruntime", "int8")
    assert served.embed(TEXTS).vectors.shape == (3, 384)
    (line,) = warnings(caplog)
    assert "cannot build openvino_int8.onnx" in line and "No space left" in line
    assert not (root / INT8.id / forms.INT8_WEIGHTS).exists()
