"""Which runtime computes a model, in what precision: the candidates a level has on this CPU,
the fidelity guard, the timing in alternate rounds, and the choice among measured candidates
(a pure function, so the rule is tested apart from any clock).

ONNX Runtime on the level's own file is the engine of record: always a candidate, always
first, never held to a fidelity check (its files pass the level's rule when they are built),
and what serves whenever nothing else passes. Any other candidate must match the level's FP32
ORT output (`MIN_COSINE`) on a fixed calibration batch, beat the engine of record by
`MARGIN` on it, and not be slower on a lone text: two candidates within noise of each other
on batches keep the engine of record, and so does one that is faster on batches but slower
on a lone text, so `auto` is not slower than ONNX Runtime where it was measured. A lone text
is not held to the margin: one short text timed for a moment is noisier than it, and a
candidate 1.7x faster on batches and about as fast alone (OpenVINO BF16 on AVX512_BF16)
lost to ONNX Runtime by that noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
BACKENDS = ("auto", ONNXRUNTIME, OPENVINO)  # EMBEDDER_BACKEND

MIN_COSINE = 0.9999  # BF16 (or another runtime's FP32) of an FP32 graph vs ORT FP32, per row
MIN_COSINE_INT8 = 0.997  # an INT8 form vs the FP32 level: the INT8 levels' own rule
INT8_WEIGHTS = "int8-weights"  # the graph of OpenVINO's INT8 form (`embedder.backends.forms`)
MARGIN = 1.05  # a candidate replaces the engine of record only when this much faster


@dataclass(frozen=True)
class Runtime:
    """What computes a model: said in its listing entry, its status and its metrics."""

    backend: str  # onnxruntime | openvino
    compute_precision: str  # fp32 | bf16 | int8


@dataclass(frozen=True)
class Candidate:
    backend: str  # onnxruntime | openvino
    precision: str  # what it computes in: fp32 | bf16 | int8
    # the level's own file, "fp32": the FP32 file an INT8 level is made from, or INT8_WEIGHTS:
    # that file with int8 weights
    graph: str = "own"
    min_cosine: float = 0.0  # vs the level's FP32 ORT output; 0: not checked (engine of record)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def candidates(
    precision: str,
    *,
    openvino: bool,
    bf16: bool,
    exact_fp32: bool,
    fp32_graph: bool,
    int8_units: bool = False,
) -> list[Candidate]:
    """A level's candidates, the engine of record first. `precision` is the level's (the
    catalog's: fp32 or int8); `openvino`: the package imports; `bf16`: the CPU has BF16 units;
    `exact_fp32`: the operator wants FP32 wherever the level is FP32; `fp32_graph`: an INT8
    level's FP32 source file is known; `int8_units`: the CPU has integer dot-product units
    (VNNI, AMX), which OpenVINO's dynamic quantization of activations needs."""
    if precision == "int8":
        found = [Candidate(ONNXRUNTIME, "int8")]
        # An INT8 level may compute in BF16 where that is faster: its window, dimensions and
        # wire format stay the level's. First of OpenVINO's (what a forced `openvino` takes):
        # the fastest and closest form measured on an AMX Xeon.
        if openvino and bf16 and not exact_fp32 and fp32_graph:
            found.append(Candidate(OPENVINO, "bf16", "fp32", MIN_COSINE))
        if openvino and fp32_graph and int8_units:
            # int8 weights, activations quantized per token and channel group at run time;
            # without those units OpenVINO computes such a graph in FP32: no candidate
            found.append(Candidate(OPENVINO, "int8", INT8_WEIGHTS, MIN_COSINE_INT8))
        return found
    found = [Candidate(ONNXRUNTIME, "fp32")]
    if openvino:
        found.append(
            Candidate(OPENVINO, "bf16" if bf16 and not exact_fp32 else "fp32", "own", MIN_COSINE)
        )
    return found


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    seconds: float | None = None  # best time of the calibration batch; None: not timed
    fidelity: float | None = None  # min cosine vs the reference; None: not checked
    error: str | None = None  # why it cannot serve (it did not open, its output was off, ...)
    lone: float | None = None  # best time of a lone text; None: not timed

    @property
    def passed(self) -> bool:
        if self.error is not None or self.seconds is None:
            return False
        need = self.candidate.min_cosine
        return need <= 0.0 or (self.fidelity is not None and self.fidelity >= need)  # NaN: no

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.candidate.label}: {self.error}"
        text = f"{self.candidate.label} {_ms(self.seconds)}"
        if self.lone is not None:
            text += f" (lone text {_ms(self.lone)})"
        if self.fidelity is not None:
            text += f", min cosine {self.fidelity:.6f}"
            if not self.passed:
                text += f" < {self.candidate.min_cosine}: rejected"
        return text


def _ms(seconds: float | None) -> str:
    return "untimed" if seconds is None else f"{seconds * 1000:.1f} ms"


def choose(measured: Sequence[Measured], margin: float = MARGIN) -> Measured:
    """The fastest candidate on the batch that passed, where any but the engine of record
    (`measured[0]`) must also beat it by `margin` on the batch and be no slower on a lone
    text (where both were timed); the engine of record when none does."""
    record = measured[0]
    if record.seconds is None or not math.isfinite(record.seconds):
        return record

    def beats(m: Measured) -> bool:
        assert m.seconds is not None and record.seconds is not None
        if m.seconds * margin > record.seconds:
            return False
        return m.lone is None or record.lone is None or m.lone <= record.lone

    faster = [m for m in measured[1:] if m.passed and beats(m)]
    return min(faster, key=lambda m: m.seconds or math.inf, default=record)


def fidelity(reference: np.ndarray, output: np.ndarray) -> float:
    """The least cosine between matching rows (pooled vectors). A one-column output (a
    reranker's logits) is compared as one vector over the batch. NaN anywhere gives NaN, and
    a shape that differs gives -1: both fail any check."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2:
        return -1.0
    if ref.shape[1] == 1:
        ref, out = ref.T, out.T
    dots = (ref * out).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosines = dots / np.maximum(norms, 1e-30)
    return float(np.nan if np.isnan(cosines).any() else cosines.min())


def time_alternately(
    runs: Mapping[str, Callable[[], object]],
    budget: float,
    clock: Callable[[], float] = time.perf_counter,
    rounds: int = 7,
    wall: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """The least `clock` time of each run over alternate rounds (each run once per round, so
    a burst of load elsewhere hits all alike), until `rounds` or about `budget` seconds of
    `wall` time per run are spent; at least one round. The runs must be warm already (their
    first run is slow). The least, not the median: noise only ever adds time.

    `clock` may be the process's CPU time where each run uses one thread (the runner
    layout): it is what a run costs the cores, and what the sibling workers loading their
    models at the same moment do not change (wall time under load was 2-5x the CPU time, and
    varied as much between rounds)."""
    best = dict.fromkeys(runs, math.inf)
    deadline = wall() + budget * len(runs)
    for _ in range(max(1, rounds)):
        for name, run in runs.items():
            started = clock()
            run()
            best[name] = min(best[name], clock() - started)
        if wall() >= deadline:
            break
    return best
