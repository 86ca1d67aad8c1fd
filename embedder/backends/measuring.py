"""One model's candidates measured at load (`auto`): each opened, checked against the level's
FP32 ONNX Runtime output on the calibration batch, and the ones that pass timed in alternate
rounds on the batch and on a lone text. What to make of the figures is `choice.choose`'s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from embedder.backends.calibration import Probe
from embedder.backends.choice import ONNXRUNTIME, Candidate, Measured, fidelity

# a candidate -> its session on the graph it runs (raises when it cannot open)
Open = Callable[[Candidate], Any]
# the warm runs by label -> the least seconds by label
Time = Callable[[Mapping[str, Callable[[], object]]], dict[str, float]]


def said(exc: Exception) -> str:
    """An exception's first line, for a log line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def measure(
    found: list[Candidate], open_: Open, probe: Probe, time_runs: Time
) -> tuple[list[Measured], dict[Candidate, Any]]:
    """Every candidate of `found` measured (in its order), and the sessions of those that
    passed, the engine of record's (`found[0]`) always among them. ONNX Runtime failing on
    the level's own file fails the model, as it always did; any other candidate failing only
    leaves it out."""
    record = found[0]
    sessions = {record: open_(record)}
    runs = {record: probe(sessions[record])}
    reference = runs[record]["batch"]()  # also the record's warm-up run
    failed: dict[Candidate, Measured] = {}
    if record.precision != "fp32":  # an INT8 level: its FP32 source on ORT, for one run
        try:
            reference = probe(open_(Candidate(ONNXRUNTIME, "fp32", "fp32")))["batch"]()
        except Exception as exc:
            failed = {c: Measured(c, error=f"no FP32 reference: {said(exc)}") for c in found[1:]}
    fidelities: dict[Candidate, float] = {}
    for c in found[1:]:
        if c in failed:
            continue
        try:
            session = open_(c)
            run = probe(session)
            fidelities[c] = fidelity(reference, run["batch"]())  # also its warm-up run
        except Exception as exc:  # an unreadable graph, a failing run: left out
            failed[c] = Measured(c, error=said(exc))
            continue
        if not fidelities[c] >= c.min_cosine:
            off = f"min cosine {fidelities[c]:.6f} < {c.min_cosine} vs onnxruntime fp32"
            failed[c] = Measured(c, fidelity=fidelities[c], error=off)
            continue
        sessions[c], runs[c] = session, run
    for r in runs.values():
        r["lone"]()  # warm: a new shape
    times = time_runs({f"{c.label}|{k}": fn for c, r in runs.items() for k, fn in r.items()})
    measured = [
        failed.get(c)
        or Measured(c, times[f"{c.label}|batch"], fidelities.get(c), lone=times[f"{c.label}|lone"])
        for c in found
    ]
    return measured, sessions
