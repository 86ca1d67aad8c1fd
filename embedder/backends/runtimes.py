"""Which runtime serves each model of a worker, per `EMBEDDER_BACKEND`:

- `onnxruntime`: the engine of record, as before there was a choice;
- `openvino`: OpenVINO wherever the level has an OpenVINO form here (BF16 where the CPU has
  BF16 units, unless `EMBEDDER_EXACT_FP32`), unchecked and untimed: the operator asked;
- `auto` (the default): at load, the level's candidates (`choice.candidates`) are checked
  against its FP32 ONNX Runtime output and timed on the calibration batch, the fastest that
  passes serves (`choice.choose`), and the choice is kept in the models root (`cache`) so a
  restart or a sibling worker opens it without measuring.

A missing `openvino` package, a graph OpenVINO cannot read, or a check that fails falls back
to ONNX Runtime with one log line; only a failure of ONNX Runtime itself fails the model.
The first session of a model decides; its other sessions (a runner's own, the lone-text one)
open on the same runtime.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from embedder.backends import forms
from embedder.backends import openvino as ov
from embedder.backends.cache import ChoiceCache, cpu_key, file_key
from embedder.backends.calibration import Probe
from embedder.backends.choice import (
    INT8_WEIGHTS,
    ONNXRUNTIME,
    OPENVINO,
    Candidate,
    Runtime,
    candidates,
    choose,
    time_alternately,
)
from embedder.backends.cpu import cpu
from embedder.backends.measuring import measure, said
from embedder.catalog import ModelSpec
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore

log = logging.getLogger("embedder.backends")

# path, config, precision -> a session (`run`, `get_inputs`, `get_outputs`)
SessionOpener = Callable[[Path, SessionConfig, str], Any]
# warm runs by candidate label, seconds of budget each, the clock -> least seconds by label
Timer = Callable[[Mapping[str, Callable[[], object]], float, Callable[[], float]], dict[str, float]]


@dataclass(frozen=True)
class BackendPolicy:
    backend: str = "auto"  # auto | onnxruntime | openvino (EMBEDDER_BACKEND)
    exact_fp32: bool = False  # FP32 levels and rerankers compute in FP32 everywhere
    budget: float = 0.25  # seconds of timing per candidate at load (after one warm-up run)
    lock_wait: float = 120.0  # seconds a worker waits for a sibling measuring the same model


@dataclass(frozen=True)
class _Chosen:
    candidate: Candidate
    graph: Path
    runtime: Runtime
    why: str  # what the model's log line said of the choice


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Runtimes:
    """One worker's runtime choices. `openers`, `bf16`, `int8` and `timer` replace the real
    runtimes, the CPU's capabilities and the clock in tests (a candidate whose output is off,
    a CPU with BF16 or integer dot-product units, timings that decide)."""

    def __init__(
        self,
        policy: BackendPolicy,
        store: ModelStore,
        *,
        openers: Mapping[str, SessionOpener] | None = None,
        bf16: bool | None = None,
        int8: bool | None = None,
        timer: Timer = time_alternately,
    ) -> None:
        self.policy = policy
        self.store = store
        self.cache = ChoiceCache(store.root)
        self.openers: dict[str, SessionOpener] = {
            ONNXRUNTIME: lambda path, config, _precision: open_session(path, config),
            OPENVINO: self._open_openvino,
            **(openers or {}),
        }
        self._bf16 = bf16
        self._int8 = bool(cpu().int8) if int8 is None else int8
        self.timer = timer
        self._openvino: str | None = None  # why OpenVINO cannot be used here, once known
        self._probed = False
        self.chosen: dict[str, _Chosen] = {}
        self._releasable: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions with `release`
        self._releasable_lock = threading.Lock()  # the idle trim reads it, the loader adds

    # --- what this machine offers -------------------------------------------------------

    def _open_openvino(self, path: Path, config: SessionConfig, precision: str) -> Any:
        return ov.open_openvino(path, config, precision, ov.cache_dir(self.store.root))

    def _offers_openvino(self) -> bool:
        """Whether OpenVINO can run here at all; with `auto`, said once per worker when it
        cannot (a forced `openvino` says it in each model's line)."""
        if not self._probed:
            self._probed = True
            try:
                ov.version()  # imports the package
                if self._bf16 is None:
                    self._bf16 = ov.bf16_units()
            except ov.Unavailable as exc:
                self._openvino = str(exc)
            except Exception as exc:  # a broken install: the service runs on without it
                self._openvino = f"openvino does not start: {exc}"
            if self._openvino is not None and self.policy.backend == "auto":
                log.warning("%s: every model runs on onnxruntime", self._openvino)
        return self._openvino is None

    def candidates(self, spec: ModelSpec) -> list[Candidate]:
        if self.policy.backend == ONNXRUNTIME:
            return candidates(
                spec.precision, openvino=False, bf16=False, exact_fp32=True, fp32_graph=False
            )
        return candidates(
            spec.precision,
            openvino=self._offers_openvino(),
            bf16=bool(self._bf16),
            exact_fp32=self.policy.exact_fp32,
            fp32_graph=self.fp32_graph(spec) is not None,
            int8_units=self._int8,
        )

    def fp32_graph(self, spec: ModelSpec) -> Path | None:
        """The FP32 file an INT8 level is built from (its recipe's input), when it is there."""
        return forms.fp32_source(self.store, spec)

    def graph_of(self, candidate: Candidate, own: Path, spec: ModelSpec) -> Path:
        """The file `candidate` runs; an int8-weights form is built here on first need
        (`forms.FormUnavailable` when it cannot be: the candidate is then left out)."""
        if candidate.graph == "own":
            return own
        found = self.fp32_graph(spec)
        assert found is not None  # a candidate only when it exists
        if candidate.graph == INT8_WEIGHTS:
            root = self.store.root
            return forms.int8_weights(root / spec.id, found, root / ".locks", self.store.digests)
        return found

    # --- opening ------------------------------------------------------------------------

    def runtime(self, model: str) -> Runtime | None:
        chosen = self.chosen.get(model)
        return chosen.runtime if chosen else None

    def why(self, model: str) -> str | None:
        """Why `model` computes where it does (measured, kept, forced, fallen back), as its
        log line said: what the benchmark reports beside its own figures."""
        chosen = self.chosen.get(model)
        return chosen.why if chosen else None

    def open(self, spec: ModelSpec, graph: Path, config: SessionConfig, probe: Probe) -> Any:
        """A session for `spec` (its graph at `graph`, as the engine opens it). The model's
        first session chooses its runtime, and says so in one log line (a warning when
        OpenVINO was wanted and could not serve); later ones open on the same."""
        chosen = self.chosen.get(spec.id)
        if chosen is not None:
            return self._open(chosen.candidate, chosen.graph, config)
        found = self.candidates(spec)
        if self.policy.backend == OPENVINO:
            opened = self._forced(spec, found, graph, config, probe)
        elif len(found) == 1:
            why = "the only candidate on this CPU"
            if self.policy.backend == ONNXRUNTIME:
                why = "EMBEDDER_BACKEND=onnxruntime"
            opened = _Opened(self._open(found[0], graph, config), found[0], why)
        else:
            opened = self._auto(spec, found, graph, config, probe)
        candidate = opened.candidate
        # An OpenVINO session says what it computes in (BF16 only where the CPU can).
        precision = str(getattr(opened.session, "compute_precision", candidate.precision))
        runtime = Runtime(candidate.backend, precision)
        self.chosen[spec.id] = _Chosen(
            candidate, self.graph_of(candidate, graph, spec), runtime, opened.why
        )
        log.log(
            logging.WARNING if opened.fell_back else logging.INFO,
            "model %s computes on %s %s (%s)",
            spec.id,
            runtime.backend,
            precision,
            opened.why,
        )
        return opened.session

    def _open(self, candidate: Candidate, graph: Path, config: SessionConfig) -> Any:
        session = self.openers[candidate.backend](graph, config, candidate.precision)
        if callable(getattr(session, "release", None)):
            with self._releasable_lock:
                self._releasable.add(session)
        return session

    def release(self) -> None:
        """Give back the batch memory the sessions hold beyond malloc's heap (the worker's
        idle trim calls this; a session under way is left for the next trim)."""
        with self._releasable_lock:
            sessions = list(self._releasable)
        for session in sessions:
            session.release()

    def _forced(
        self,
        spec: ModelSpec,
        found: list[Candidate],
        graph: Path,
        config: SessionConfig,
        probe: Probe,
    ) -> _Opened:
        """OpenVINO unchecked and untimed, once it has run the calibration batch (which
        also warms it up): a graph it reads but cannot run falls back too."""
        wanted = next((c for c in found if c.backend == OPENVINO), None)
        if wanted is None:
            why = self._openvino or f"an {spec.precision.upper()} level has no OpenVINO form here"
        else:
            try:
                session = self._open(wanted, self.graph_of(wanted, graph, spec), config)
                probe(session)["batch"]()
                return _Opened(session, wanted, "EMBEDDER_BACKEND=openvino")
            except Exception as exc:  # an unreadable graph, a failing run
                why = said(exc)
        session = self._open(found[0], graph, config)
        return _Opened(session, found[0], f"EMBEDDER_BACKEND=openvino, but {why}", True)

    # --- auto: measured once, kept in the models root -------------------------------------

    def _key(
        self, spec: ModelSpec, found: list[Candidate], graph: Path, config: SessionConfig
    ) -> dict[str, Any]:
        """What the measurement depends on: a change of any measures again."""
        return {
            "cpu": cpu_key(),
            "files": {c.graph: self._file_key(c, graph, spec) for c in found},
            "candidates": [c.label for c in found],
            "layout": {"threads": config.threads, "streams": config.streams},
            "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
            "openvino_compute": {
                c.label: ov.compute_properties(c.precision) for c in found if c.backend == OPENVINO
            },
        }

    def _file_key(self, candidate: Candidate, graph: Path, spec: ModelSpec) -> str:
        """A candidate's graph as the key knows it: a form built here by its source and
        recipe (not built just to be named)."""
        if candidate.graph != INT8_WEIGHTS:
            return file_key(self.graph_of(candidate, graph, spec))
        source = self.fp32_graph(spec)
        assert source is not None  # a candidate only when it exists
        return f"{forms.RECIPE} of {file_key(source)}"

    def _auto(
        self,
        spec: ModelSpec,
        found: list[Candidate],
        graph: Path,
        config: SessionConfig,
        probe: Probe,
    ) -> _Opened:
        key = self._key(spec, found, graph, config)
        lock: filelock.FileLock | None = None
        try:
            lock = self.cache.lock(spec.id)
            lock.acquire(timeout=self.policy.lock_wait)
        except (filelock.Timeout, OSError) as exc:
            log.warning("model %s: measuring without the lock (%s)", spec.id, exc)
            lock = None
        try:
            kept = self.cache.get(spec.id, key)
            opened = self._kept(spec, found, graph, config, kept) if kept else None
            if opened is not None:
                return opened
            # One thread per run: CPU time, which siblings loading at the same moment leave
            # alone; a run on several threads would count its spinning too: wall time then.
            clock = time.process_time if config.threads == 1 else time.perf_counter
            measured, sessions = measure(
                found,
                lambda c: self._open(c, self.graph_of(c, graph, spec), config),
                probe,
                lambda runs: self.timer(runs, self.policy.budget, clock),
            )
            best = choose(measured)
            choice = {f: getattr(best.candidate, f) for f in _CHOICE_FIELDS}
            lines = [m.describe() for m in measured]
            self.cache.put(spec.id, key, {"choice": choice, "measured": lines})
            failed = any(m.error is not None for m in measured)
            return _Opened(sessions[best.candidate], best.candidate, "; ".join(lines), failed)
        finally:
            if lock is not None:
                lock.release()

    def _kept(
        self,
        spec: ModelSpec,
        found: list[Candidate],
        graph: Path,
        config: SessionConfig,
        kept: dict[str, Any],
    ) -> _Opened | None:
        """The kept choice opened, or None to measure again (it is no candidate now, or it
        does not open any more)."""
        choice = kept["choice"]
        for c in found:
            if [c.backend, c.precision, c.graph] != [choice.get(f) for f in _CHOICE_FIELDS]:
                continue
            try:
                session = self._open(c, self.graph_of(c, graph, spec), config)
            except (ov.Unavailable, forms.FormUnavailable) as exc:
                log.warning(
                    "model %s: the kept %s fails (%s); measuring again", spec.id, c.label, exc
                )
                return None
            lines = "; ".join(str(m) for m in kept.get("measured", []))
            return _Opened(session, c, f"as measured on {kept.get('at', '?')}: {lines}")
        return None


_CHOICE_FIELDS = ("backend", "precision", "graph")


@dataclass(frozen=True)
class _Opened:
    session: Any
    candidate: Candidate
    why: str  # for the log line
    fell_back: bool = False  # OpenVINO was wanted and could not serve
