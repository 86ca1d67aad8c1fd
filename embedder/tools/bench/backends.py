"""The runtimes side by side: per level (and cross-encoder reranker), ONNX Runtime and
OpenVINO in each precision this CPU offers, and what `auto` chose for it here.

Which runtimes: the service's own candidate lists (`Runtimes.candidates`), with the default
policy and with `EMBEDDER_EXACT_FP32=1` (so OpenVINO FP32 too where `auto` would take BF16),
so the bench measures what the service chooses among and nothing it could not choose.

How: in a worker's runner layout, one model shared by a runner thread per core (ONNX
Runtime: one single-thread session; OpenVINO: one compiled model with a stream per runner),
opened as the service opens them. Each round runs every contender once on the batch set (the
corpus tokenized, planned into length-sorted sub-batches that the runners pull, as the
engine's limit does) and then on each lone text alone (one runner computes, as for a lone
request), in an order that rotates from round to round, so a burst of load elsewhere hits all
alike; ratios to ONNX Runtime are taken within each round (paired), then their median.
Fidelity: the least cosine of each contender's output on the batch set against ONNX Runtime
FP32's (an INT8 level's: its FP32 source file on ONNX Runtime; a reranker's logits as one
vector, as the load-time check does).

`auto`'s choice is read by opening the model through `Runtimes` with the service's policy,
before the rounds: it measures as a worker's first load does, or opens the choice kept in the
models root.
"""

from __future__ import annotations

import gc
import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from embedder.backends import openvino as ov
from embedder.backends.calibration import Probe, embedding_probe, pair_probe
from embedder.backends.choice import Candidate, fidelity, time_alternately
from embedder.backends.cpu import cpu
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.catalog import ModelSpec
from embedder.encoder import TextEncoder
from embedder.planning import RunLimits
from embedder.reranker import Doc, PairScorer
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer
from embedder.tools.bench.engine import pull
from embedder.tools.bench.machine import Others
from embedder.tools.bench.stats import median

MAX_ROUNDS = 7


@dataclass(frozen=True)
class Workload:
    """What one model runs in the rounds: `make` turns a session into a runner's engine,
    `batch` runs the batch set on the runners, `lone[i]` one lone text (or pair) alone."""

    make: Callable[[Any], Any]
    batch: Callable[[Any, int], np.ndarray]  # engine, runners -> output rows
    lone: Sequence[Callable[[Any], object]]
    probe: Probe  # the service's calibration work, for `auto`
    items: int  # texts (or pairs) in the batch set


def embedding_work(
    store: ModelStore, spec: ModelSpec, texts: Sequence[str], lone: Sequence[str]
) -> Workload:
    assert spec.tokenizer
    tok = load_tokenizer(store.path(spec, spec.tokenizer), spec.max_tokens)
    limits = RunLimits()

    def batch(encoder: TextEncoder, runners: int) -> np.ndarray:
        tokens = encoder.tokenize(texts)
        return encoder.finish(tokens, pull([encoder] * runners, tokens)).vectors

    return Workload(
        make=lambda session: TextEncoder(spec, session, tok, limits),
        batch=batch,
        lone=[partial(_embed_alone, t) for t in lone],
        probe=embedding_probe(spec, tok, limits),
        items=len(texts),
    )


def _embed_alone(text: str, encoder: TextEncoder) -> object:
    return encoder.embed([text])


def _score_alone(query: str, doc: Doc, scorer: PairScorer) -> object:
    return scorer.run_rows(scorer.tokenize(query, [doc]), np.zeros(1, dtype=np.intp))


def pair_work(
    store: ModelStore, spec: ModelSpec, query: str, docs: Sequence[str], lone: int
) -> Workload:
    assert spec.tokenizer
    path = store.path(spec, spec.tokenizer)
    toks = [load_tokenizer(path, spec.max_tokens) for _ in range(2)]
    limits = RunLimits()
    items = [Doc(str(i), d) for i, d in enumerate(docs)]

    def batch(scorer: PairScorer, runners: int) -> np.ndarray:
        return pull([scorer] * runners, scorer.tokenize(query, items))

    return Workload(
        make=lambda session: PairScorer(spec, session, toks[0], toks[1], limits),
        batch=batch,
        lone=[partial(_score_alone, query, d) for d in items[:lone]],
        probe=pair_probe(spec, toks[0], toks[1], limits),
        items=len(items),
    )


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The CPU as the backends read it, and what OpenVINO makes of it (None: not installed)."""
    c = cpu()
    out: dict[str, Any] = {"cpu": c.model, "cpu_ident": c.ident, "cpu_flags": list(c.flags)}
    out |= {"bf16_flags": list(c.bf16), "int8_flags": list(c.int8)}
    try:
        build = ov.version()  # imports it
        out |= {"openvino": _version("openvino") or build, "openvino_bf16": ov.bf16_units()}
    except ov.Unavailable as exc:
        out |= {"openvino": None, "openvino_bf16": None, "skipped": str(exc)}
    return out


def contenders(
    runtimes: Runtimes, exact: Runtimes, spec: ModelSpec, units: Runtimes | None = None
) -> list[dict[str, Any]]:
    """The service's candidates for `spec` under `auto`, then those only `EMBEDDER_EXACT_FP32`
    adds, then those `units` (the same CPU said to have integer dot-product units) adds: what
    OpenVINO's INT8 form does on a CPU where the service does not offer it; the engine of
    record first."""
    served, fp32 = runtimes.candidates(spec), exact.candidates(spec)
    more = units.candidates(spec) if units is not None else []
    return [
        {"candidate": c, "auto": c in served, "exact_fp32": c in fp32}
        for c in dict.fromkeys([*served, *fp32, *more])
    ]


def measure_model(
    store: ModelStore,
    spec: ModelSpec,
    work: Workload,
    *,
    runners: int,
    seconds: float,
    min_rounds: int = 3,
) -> dict[str, Any]:
    """One model's contenders, `auto`'s choice and the rounds (see the module's text)."""
    others = Others()
    assert spec.onnx
    own = store.path(spec, spec.onnx)
    config = SessionConfig(threads=1, streams=runners)  # as the service opens a model's runners
    measured_now: list[bool] = []

    def timer(runs: Any, budget: float, clock: Callable[[], float]) -> dict[str, float]:
        measured_now.append(True)
        return time_alternately(runs, budget, clock)

    runtimes = Runtimes(BackendPolicy("auto"), store, timer=timer)
    exact = Runtimes(BackendPolicy("auto", exact_fp32=True), store)
    units = Runtimes(BackendPolicy("auto"), store, int8=True)
    rows = contenders(runtimes, exact, spec, units)
    out: dict[str, Any] = {"model": spec.id, "kind": spec.kind, "precision": spec.precision}
    out |= {"runners": runners, "items": work.items, "lone_items": len(work.lone)}
    began = time.perf_counter()
    runtimes.open(spec, own, config, work.probe)  # the session goes at once: only the choice
    chosen = runtimes.chosen[spec.id]
    out["auto"] = {
        "backend": chosen.runtime.backend,
        "compute_precision": chosen.runtime.compute_precision,
        "label": chosen.candidate.label,
        "why": runtimes.why(spec.id),
        "measured_now": bool(measured_now),
        "seconds": time.perf_counter() - began,
    }
    gc.collect()
    engines: dict[str, Any] = {}
    source = runtimes.fp32_graph(spec)
    for row in rows:
        c: Candidate = row.pop("candidate")
        row |= {"label": c.label, "backend": c.backend, "precision": c.precision}
        row |= {"graph": c.graph, "chosen": c == chosen.candidate}
        try:
            path = runtimes.graph_of(c, own, spec)  # an int8-weights form is built here
            t0 = time.perf_counter()
            session = runtimes.openers[c.backend](path, config, c.precision)
            row["open_s"] = time.perf_counter() - t0
            row["computes"] = str(getattr(session, "compute_precision", c.precision))
            engines[c.label] = work.make(session)
        except Exception as exc:  # OpenVINO refusing a graph: said in the row
            row["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    out["contenders"] = rows
    _fidelity(store, spec, work, rows, engines, runners, config, source)
    out |= _rounds(work, rows, engines, runners, seconds, min_rounds)
    out["others_cpu_share"] = others.share()
    engines.clear()
    gc.collect()
    return out


def _fidelity(
    store: ModelStore,
    spec: ModelSpec,
    work: Workload,
    rows: list[dict[str, Any]],
    engines: dict[str, Any],
    runners: int,
    config: SessionConfig,
    source: Path | None,
) -> None:
    """Each contender's output on the batch set (also its warm-up) against ONNX Runtime FP32's:
    the engine of record's own where the level is FP32, else its FP32 source file's."""
    outputs = {label: work.batch(e, runners) for label, e in engines.items()}
    record = rows[0]["label"]
    if spec.precision == "fp32":
        reference = outputs.get(record)
        rows[0]["reference"] = True
    elif source is not None:
        reference = work.batch(work.make(open_session(source, config)), runners)
    else:
        reference = None
    for row in rows:
        got = outputs.get(row["label"])
        if got is None or reference is None:
            continue
        row["min_cosine"] = fidelity(reference, got)
        if got.ndim == 2 and got.shape[1] > 1:
            a, b = reference.astype(np.float64), got.astype(np.float64)
            cos = (a * b).sum(1) / np.maximum(
                np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30
            )
            row["mean_cosine"] = float(cos.mean())
    for e in engines.values():  # lone shapes are new shapes: warm them too
        for run in work.lone:
            run(e)


def _rounds(
    work: Workload,
    rows: list[dict[str, Any]],
    engines: dict[str, Any],
    runners: int,
    seconds: float,
    min_rounds: int,
) -> dict[str, Any]:
    """Alternate rounds until `seconds` have passed (at least `min_rounds`); into each row its
    texts/s, lone-text times and their ratios to the engine of record (paired per round), in
    wall time and in the process's CPU time (what the runs cost the cores: on a shared
    machine it moves far less with the others' load than wall time does)."""
    labels = list(engines)
    batch: dict[str, list[tuple[float, float]]] = {k: [] for k in labels}
    lone: dict[str, list[list[tuple[float, float]]]] = {k: [[] for _ in work.lone] for k in labels}
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < min_rounds or (time.monotonic() < deadline and rounds < MAX_ROUNDS):
        order = labels[rounds % len(labels) :] + labels[: rounds % len(labels)]
        for k in order:
            batch[k].append(_timed(work.batch, engines[k], runners))
        for i, run in enumerate(work.lone):
            for k in order:
                lone[k][i].append(_timed(run, engines[k]))
        rounds += 1
    record = rows[0]["label"]
    for row in rows:
        k = row["label"]
        if k not in engines:
            continue
        row["rounds"] = [work.items / wall for wall, _ in batch[k]]
        row["texts_per_s"] = median(row["rounds"])
        row["cpu_ms_per_item"] = median([cpu * 1000 / work.items for _, cpu in batch[k]])
        each = [median([wall for wall, _ in t]) * 1000 for t in lone[k]]
        row["lone_ms_p50"] = median(each) if each else None
        if record not in engines:
            continue
        for name, clock in (("", 0), ("cpu_", 1)):
            pairs = zip(batch[record], batch[k], strict=True)
            row[f"{name}vs_ort"] = median([r[clock] / max(s[clock], 1e-9) for r, s in pairs])
            each_pair = [
                r[clock] / max(s[clock], 1e-9)
                for i in range(len(work.lone))
                for r, s in zip(lone[record][i], lone[k][i], strict=True)
            ]
            row[f"lone_{name}vs_ort"] = median(each_pair) if each_pair else None
    return {"rounds": rounds}


def _timed(run: Callable[..., object], *args: Any) -> tuple[float, float]:
    """(wall, process CPU) seconds of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(*args)
    return time.perf_counter() - wall, time.process_time() - cpu
