"""The choice rule on injected measurements: candidates per level and CPU, the fidelity guard,
the margin that keeps the engine of record, and the alternate-round timing on a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedder.backends.choice import (
    INT8_WEIGHTS,
    MIN_COSINE,
    MIN_COSINE_INT8,
    ONNXRUNTIME,
    OPENVINO,
    Candidate,
    Measured,
    candidates,
    choose,
    fidelity,
    time_alternately,
)

ORT32 = Candidate(ONNXRUNTIME, "fp32")
ORT8 = Candidate(ONNXRUNTIME, "int8")
OV32 = Candidate(OPENVINO, "fp32", "own", MIN_COSINE)
OV16 = Candidate(OPENVINO, "bf16", "own", MIN_COSINE)
OV16_OF_FP32 = Candidate(OPENVINO, "bf16", "fp32", MIN_COSINE)
OV8 = Candidate(OPENVINO, "int8", INT8_WEIGHTS, MIN_COSINE_INT8)


def labels(found: list[Candidate]) -> list[str]:
    return [f"{c.label} {c.graph}" for c in found]


@pytest.mark.parametrize(
    ("precision", "openvino", "bf16", "exact", "want"),
    [
        ("fp32", False, False, False, [ORT32]),
        ("fp32", True, False, False, [ORT32, OV32]),
        ("fp32", True, True, False, [ORT32, OV16]),
        ("fp32", True, True, True, [ORT32, OV32]),  # exact FP32: never BF16
        ("int8", True, False, False, [ORT8]),  # no BF16 units: the recipe file alone
        ("int8", True, True, False, [ORT8, OV16_OF_FP32]),  # BF16 of the FP32 source
        ("int8", True, True, True, [ORT8]),
        ("int8", False, True, False, [ORT8]),
    ],
)
def test_candidates_per_level_and_cpu(precision, openvino, bf16, exact, want):
    found = candidates(precision, openvino=openvino, bf16=bf16, exact_fp32=exact, fp32_graph=True)
    assert labels(found) == labels(want)
    assert found[0].min_cosine == 0.0  # the engine of record is never held to a check


def test_an_int8_level_without_a_known_fp32_source_has_no_bf16_candidate():
    found = candidates("int8", openvino=True, bf16=True, exact_fp32=False, fp32_graph=False)
    assert found == [ORT8]


@pytest.mark.parametrize(
    ("openvino", "bf16", "exact", "source", "want"),
    [
        (True, False, False, True, [ORT8, OV8]),
        (True, True, False, True, [ORT8, OV16_OF_FP32, OV8]),  # BF16 first: forced takes it
        (True, True, True, True, [ORT8, OV8]),  # exact FP32 is of FP32 levels: int8 stays
        (False, True, False, True, [ORT8]),
        (True, True, False, False, [ORT8]),  # the form is made from the FP32 source
    ],
)
def test_openvinos_int8_form_is_a_candidate_only_with_integer_units(
    openvino, bf16, exact, source, want
):
    found = candidates(
        "int8", openvino=openvino, bf16=bf16, exact_fp32=exact, fp32_graph=source, int8_units=True
    )
    assert labels(found) == labels(want)
    without = candidates("int8", openvino=openvino, bf16=bf16, exact_fp32=exact, fp32_graph=source)
    assert OV8 not in without  # where OpenVINO would compute it in FP32


def test_fp32_levels_never_get_the_int8_form():
    found = candidates(
        "fp32", openvino=True, bf16=False, exact_fp32=False, fp32_graph=True, int8_units=True
    )
    assert found == [ORT32, OV32]


def test_the_fastest_that_passes_serves():
    measured = [
        Measured(ORT32, 0.010),
        Measured(OV16, 0.004, 0.99998),
        Measured(OV32, 0.008, 1.0),
    ]
    assert choose(measured).candidate == OV16


def test_a_faster_candidate_whose_output_is_off_is_rejected():
    measured = [Measured(ORT32, 0.010), Measured(OV16, 0.002, 0.9990)]
    assert not measured[1].passed
    assert choose(measured).candidate == ORT32
    assert "rejected" in measured[1].describe()


def test_nan_output_never_passes():
    nan = Measured(OV16, 0.001, math.nan)
    assert not nan.passed
    assert choose([Measured(ORT32, 0.010), nan]).candidate == ORT32


def test_within_the_margin_the_engine_of_record_stays():
    # 3 % faster is noise on a shared machine: auto must never be slower than ONNX Runtime.
    assert choose([Measured(ORT32, 0.0100), Measured(OV32, 0.0097, 1.0)]).candidate == ORT32
    assert choose([Measured(ORT32, 0.0100), Measured(OV32, 0.0090, 1.0)]).candidate == OV32


def test_faster_on_batches_but_slower_on_a_lone_text_keeps_the_engine_of_record():
    """Measured here (AVX2): OpenVINO FP32 1.1x ORT on 32-text batches, 0.8x on lone texts."""
    record = Measured(ORT32, 0.010, lone=0.0020)
    slower_alone = Measured(OV32, 0.008, 1.0, lone=0.0025)
    assert choose([record, slower_alone]).candidate == ORT32
    both = Measured(OV16, 0.004, 0.99999, lone=0.0012)
    assert choose([record, slower_alone, both]).candidate == OV16
    assert "lone text 1.2 ms" in both.describe()


def test_a_lone_text_is_held_to_no_slower_not_to_the_margin():
    """Measured on AMD EPYC Zen 4 (2026-12-07): OpenVINO BF16 1.6x ONNX Runtime on the
    calibration batch, 1.8 vs 1.9 ms on the lone text: within the margin, but not slower."""
    record = Measured(ORT32, 0.0392, lone=0.0019)
    bf16 = Measured(OV16, 0.0239, 0.99997, lone=0.0018)
    assert choose([record, bf16]).candidate == OV16
    slower = Measured(OV16, 0.0239, 0.99997, lone=0.00191)
    assert choose([record, slower]).candidate == ORT32


def test_a_candidate_that_failed_to_open_is_left_out():
    failed = Measured(OV32, error="OpenVINO cannot compile model.onnx: unsupported operator")
    assert choose([Measured(ORT8, 0.010), failed]).candidate == ORT8
    assert failed.describe().endswith("unsupported operator")


def test_fidelity_is_the_least_row_cosine():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 16)).astype(np.float32)
    assert fidelity(ref, ref) == pytest.approx(1.0)
    off = ref.copy()
    off[3] = -off[3]
    assert fidelity(ref, off) == pytest.approx(-1.0)
    assert fidelity(ref, ref * 3.0) == pytest.approx(1.0)  # pooled rows need not be unit
    assert fidelity(ref, ref[:, :8]) == -1.0  # another shape fails any check
    with_nan = ref.copy()
    with_nan[0, 0] = np.nan
    assert math.isnan(fidelity(ref, with_nan))


def test_a_one_column_output_is_compared_over_the_batch():
    logits = np.array([[2.0], [-1.0], [0.5], [3.0]], dtype=np.float32)
    assert fidelity(logits, logits) == pytest.approx(1.0)
    flipped = logits.copy()
    flipped[1] = 1.0  # one score changes sign
    assert fidelity(logits, flipped) < 0.9


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_alternately_alternates_keeps_the_best_and_stops_at_the_budget():
    clock = FakeClock()
    order: list[str] = []
    costs = {"a": [0.05, 0.03, 0.04, 0.04], "b": [0.02, 0.06, 0.01, 0.02]}

    def run(name: str):
        def go() -> None:
            order.append(name)
            clock.now += costs[name][sum(1 for o in order if o == name) - 1]

        return go

    runs = {"a": run("a"), "b": run("b")}
    best = time_alternately(runs, budget=0.1, clock=clock, rounds=9, wall=clock)
    assert order[:4] == ["a", "b", "a", "b"]
    assert len(order) == 6  # 3 rounds: the 0.2 s budget for both is spent after the third
    assert best == {"a": pytest.approx(0.03), "b": pytest.approx(0.01)}


def test_time_alternately_runs_one_round_even_when_a_run_outlasts_the_budget():
    clock = FakeClock()

    def slow() -> None:
        clock.now += 5.0

    assert time_alternately({"x": slow}, budget=0.1, clock=clock, wall=clock) == {"x": 5.0}


def test_time_alternately_measures_on_its_clock_within_a_wall_budget():
    """CPU time measured, wall time bounded: a loaded machine stretches the wall time of
    each run (here 4x its CPU time), which must end the timing, not skew it."""
    cpu, wall = FakeClock(), FakeClock()

    def run() -> None:
        cpu.now += 0.01
        wall.now += 0.04

    best = time_alternately({"x": run}, budget=0.1, clock=cpu, rounds=50, wall=wall)
    assert best == {"x": pytest.approx(0.01)}
    assert wall.now == pytest.approx(0.12)  # three runs: the 0.1 s of wall time spent
