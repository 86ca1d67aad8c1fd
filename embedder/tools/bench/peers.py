"""The peers' phase of a starter run: our all-MiniLM-L6-v2 levels and the peers on the same
model, texts and cores, in alternate rounds.

Contenders: ours (each of our levels of that model, as a worker runs it: one single-thread
session shared by a runner thread per core) and the peers, each in a child process of its
own (`peer_serve`): sentence-transformers in FP32 and in bf16 (`peer`) and fastembed
(`peer_fastembed`, in its own environment). Each round gives every contender the whole corpus
once, one after the other; the ratio of two contenders is the median of their per-round
ratios (on a shared machine, neighbouring rounds see the same load). The first round's vectors
are compared with sentence-transformers FP32's (min and mean cosine). On a CPU without BF16
units torch runs bf16 emulated, much slower than FP32: not the peer's best mode there, so it
gets one round only, on every n-th text of the corpus (about 64: the same mix of lengths), and
no ratio against ours, whose rounds ran other texts. A peer that cannot start or stops
answering is reported as not measured; the others go on.

Where the service computes a level on another runtime than ONNX Runtime (`EMBEDDER_BACKEND`,
as the bench's servers read it: OpenVINO in BF16 on CPUs with BF16 units), that level joins
twice: on ONNX Runtime, and as the service runs it by default (`default` in its row), so the
vectors the service serves are compared with sentence-transformers FP32's too, and the two
runtimes are paired round by round.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedder.settings import Settings
from embedder.tools.bench import fastembed_env, peer
from embedder.tools.bench.engine import open_embedder, open_served, pull
from embedder.tools.bench.machine import bf16_units, cores, cpu_flags, cpu_model
from embedder.tools.bench.peer_child import Child, PeerFailed
from embedder.tools.bench.peer_serve import answer
from embedder.tools.bench.plan import Options
from embedder.tools.bench.run_levels import Level
from embedder.tools.bench.scenarios import Clock
from embedder.tools.bench.stats import median

SAME_MODEL = ("all-minilm-l6-v2", "all-minilm-l6-v2-int8")  # our levels of the peers' model
PEERS = ("st-fp32", "st-bf16", "fastembed")
REFERENCE = "st-fp32"  # the vectors every other contender's are compared with
EMULATED_SAMPLE = 64  # texts, about, for bf16 on a CPU without BF16 units
WHAT = {
    "st-fp32": "sentence-transformers, PyTorch FP32",
    "st-bf16": "sentence-transformers, PyTorch bf16 (torch_dtype=bfloat16)",
    "fastembed": "fastembed, ONNX Runtime FP32 (our model.onnx as a local model)",
}


class Conn(Protocol):
    def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _Pooled:
    """Our level as the peers' protocol sees it: `encode` is one planned set over the runners
    (as the limit and a worker's micro-batcher run it)."""

    def __init__(self, group: Sequence[Any]) -> None:
        self.group = group

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        first = self.group[0]
        tok = first.tokenize(texts)
        vectors: np.ndarray = first.finish(tok, pull(self.group, tok)).vectors
        return vectors


class Local:
    """A contender in this process, answering the same commands as a child."""

    def __init__(self, encoder: _Pooled, texts: Sequence[str]) -> None:
        self.encoder, self.texts = encoder, texts

    def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        return answer(self.encoder, self.texts, message)

    def close(self) -> None:
        self.encoder.group = []


@dataclass
class Side:
    key: str
    info: dict[str, Any]
    conn: Conn
    max_rounds: int = 0  # 0: as many as the others
    every: int = 1  # its rounds take every n-th text only (a sample; no paired ratios then)
    rates: dict[int, float] = field(default_factory=dict)
    single_ms: list[float] = field(default_factory=list)
    failed: str | None = None


def _ours(
    levels: Sequence[Level],
    texts: Sequence[str],
    threads: int,
    settings: Settings | None,
    skipped: dict[str, dict[str, Any]],
) -> list[Side]:
    """Our levels of the peers' model on ONNX Runtime and, where the service (`settings`)
    computes one elsewhere, that level as the service runs it; a level the service's way
    cannot open goes to `skipped`, the phase goes on."""
    out = []
    for lv in levels:
        if lv.catalog.name != "starter" or lv.spec.id not in SAME_MODEL:
            continue
        one = open_embedder(lv.store, lv.spec, 1)
        one.embed(texts[:4])  # warm-up
        info: dict[str, Any] = {"kind": "ours", "level": lv.key, "model": lv.spec.id}
        info |= {"precision": lv.spec.precision, "backend": "onnxruntime", "threads": threads}
        info["what"] = f"ours, {lv.spec.precision.upper()} level {lv.key}, onnxruntime"
        info["layout"] = f"{threads}x1 (one single-thread session, a runner thread per core)"
        out.append(Side(lv.key, info, Local(_Pooled([one] * threads), texts)))
        try:
            served = _served(lv, texts, threads, settings) if settings is not None else None
        except Exception as exc:  # OpenVINO refusing the graph: said in the report
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            skipped[f"{lv.key} as served"] = {k: info[k] for k in ("kind", "level", "model")}
            skipped[f"{lv.key} as served"] |= {"precision": lv.spec.precision, "skipped": why}
            continue
        if served is None:
            info["default"] = True  # what the service runs for this level here
        else:
            out.append(served)
    return out


def _served(lv: Level, texts: Sequence[str], threads: int, settings: Settings) -> Side | None:
    """`lv` opened as a worker opens it under `settings` (`Opener.encoder`: its runtime
    chosen, or the kept choice read, as at a worker's start), when that is not ONNX Runtime;
    else None. Its runners are the phase's (a thread per core), so the compiled model gets a
    stream each."""
    served = open_served(lv.store, lv.spec, threads, settings)
    if served is None:
        return None
    spec, encoder, runtime = lv.spec, served.encoder, served.runtime
    encoder.embed(texts[:4])  # warm-up
    computes = runtime.compute_precision
    key = f"{lv.key} {runtime.backend} {computes}"
    info: dict[str, Any] = {"kind": "ours", "level": lv.key, "model": spec.id, "default": True}
    info |= {"precision": spec.precision, "backend": runtime.backend, "computes": computes}
    info["threads"] = threads
    info["what"] = (
        f"ours, {spec.precision.upper()} level {lv.key}, {runtime.backend} computing in "
        f"{computes.upper()} (what the service runs here: {served.why})"
    )
    info["layout"] = f"{threads}x1 (one compiled model, a stream per runner thread)"
    return Side(key, info, Local(_Pooled([encoder] * threads), texts))


def _start(
    name: str, opts: Options, files: dict[str, Path], fp32: Level, tmp: Path, clock: Clock
) -> Child:
    """The peer's child, started (not yet ready)."""
    common = ["--texts", str(files["corpus"]), "--threads", str(cores())]
    common += ["--batch", str(opts.batch), "--max-tokens", str(fp32.spec.max_tokens)]
    if name in ("st-fp32", "st-bf16"):
        why = peer.missing()
        if why is not None:
            raise PeerFailed(why)
        env = dict(os.environ) | {"HF_HUB_OFFLINE": "1"}
        argv = [sys.executable, "-m", "embedder.tools.bench.peer", "--dtype", name[3:], *common]
        return Child(name, argv, env)
    venv = fastembed_env.venv_dir()
    if not fastembed_env.ready(venv):
        clock.say(f"making fastembed's environment in {venv} (once, about a minute)")
    try:
        python = fastembed_env.ensure(venv, timeout=600)
        folder = fastembed_env.model_folder(tmp / "fastembed-model", fp32.store, fp32.spec)
    except fastembed_env.Unavailable as exc:
        raise PeerFailed(str(exc)) from None
    path = fastembed_env.child_path(tmp / "fastembed-path")
    argv = [str(python), "-m", "embedder.tools.bench.peer_fastembed", *common]
    argv += ["--model-dir", str(folder), "--cache", str(tmp / "fastembed-cache")]
    return Child(name, argv, fastembed_env.child_env(path), cwd=path)


def _cosines(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = vectors.astype(np.float64)
    b = reference.astype(np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _rounds(opts: Options, sides: list[Side], tmp: Path, timeout: float, clock: Clock) -> None:
    until = time.monotonic() + opts.peer_seconds
    for r in range(max(1, opts.peer_rounds)):
        if r >= 2 and time.monotonic() > until:
            break  # a busy machine: fewer rounds, never fewer than two
        for s in sides:
            if s.failed or (s.max_rounds and len(s.rates) >= s.max_rounds):
                continue
            save = tmp / f"vectors-{s.key.replace(':', '-')}.npy" if r == 0 else None
            ask = {"do": "round", "save": str(save) if save else None, "every": s.every}
            try:
                got = s.conn.ask(ask, timeout)
            except PeerFailed as exc:
                s.failed = str(exc)
                continue
            s.rates[r] = float(got["texts_per_s"])
        rates = ", ".join(f"{s.key} {s.rates[r]:.1f}" for s in sides if r in s.rates)
        clock.say(f"  round {r + 1}: {rates} texts/s")


def _summary(s: Side, tmp: Path, reference: np.ndarray | None) -> dict[str, Any]:
    if not s.rates:
        return s.info | {"skipped": s.failed or "no round measured"}
    rates = [s.rates[r] for r in sorted(s.rates)]
    mid = median(rates)
    row = s.info | {"texts_per_s": mid, "rounds": {str(r): v for r, v in s.rates.items()}}
    row |= {"spread": (max(rates) - min(rates)) / mid if mid else 0.0}
    if s.single_ms:
        row["single_ms_p50"] = median(s.single_ms)
    if s.failed:
        row["failed_later"] = s.failed
    saved = tmp / f"vectors-{s.key.replace(':', '-')}.npy"
    if reference is not None and saved.is_file():
        row |= _cosines(np.load(saved), reference[:: s.every])
    return row


def _paired(ours: Side, other: Side) -> float | None:
    if other.every > 1:
        return None  # other texts than ours
    both = [ours.rates[r] / other.rates[r] for r in ours.rates if other.rates.get(r)]
    return median(both) if both else None


def measure(
    opts: Options,
    clock: Clock,
    levels: Sequence[Level],
    files: dict[str, Path],
    texts: Sequence[str],
    tmp: Path,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Ours and the peers `opts.peers` in alternate rounds; `result["peers"]`. `settings`:
    the bench's servers', for our levels as the service serves them (`_ours`)."""
    threads = cores()
    units = bf16_units()
    out: dict[str, Any] = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "bf16_units": units}
    out["threads"] = threads
    out |= {"texts": len(texts), "batch": opts.batch, "reference": REFERENCE}
    fp32 = next(lv for lv in levels if lv.key == "starter:4")
    timeout = opts.peer_timeout or opts.peer_seconds * 6 + 240
    sides: list[Side] = []
    skipped: dict[str, dict[str, Any]] = {}
    try:
        sides += _ours(levels, texts, threads, settings, skipped)
        for name in opts.peers:
            clock.say(f"starting the peer {name} ({WHAT[name]})")
            info: dict[str, Any] = {"kind": "peer", "what": WHAT[name]}
            try:
                child = _start(name, opts, files, fp32, tmp, clock)
            except PeerFailed as exc:
                skipped[name] = info | {"skipped": str(exc)}
                continue
            side = Side(name, info, child)
            sides.append(side)
            try:
                side.info |= child.ready(timeout)
            except PeerFailed as exc:
                side.failed = str(exc)
            side.info.pop("ready", None)
            if name == "st-bf16" and not units:
                # Emulated bf16: several times slower than FP32, and not the peer's best mode
                # here: one round on a sample of the corpus (its length mix), which keeps it
                # from eating the run's budget.
                side.max_rounds = 1
                side.every = max(1, len(texts) // EMULATED_SAMPLE)
                side.info["emulated"] = True
                if side.every > 1:
                    side.info["sample"] = len(texts[:: side.every])
        _rounds(opts, sides, tmp, timeout, clock)
        for s in sides:
            if not s.failed and s.rates:
                seconds = min(5.0, max(1.0, opts.peer_seconds / 6))
                ask = {"do": "singles", "count": opts.idle_texts, "seconds": seconds}
                try:
                    s.single_ms = s.conn.ask(ask, timeout)["single_ms"]
                except PeerFailed as exc:
                    s.failed = str(exc)
    finally:
        for s in sides:
            s.conn.close()
    ref_file = tmp / f"vectors-{REFERENCE}.npy"
    if not ref_file.is_file():  # no sentence-transformers: our FP32 level is the reference
        out["reference"] = fp32.key
        ref_file = tmp / f"vectors-{fp32.key.replace(':', '-')}.npy"
    reference = np.load(ref_file) if ref_file.is_file() else None
    rows = {s.key: _summary(s, tmp, reference) for s in sides} | skipped
    out["contenders"] = {k: rows[k] for k in [*(s.key for s in sides), *skipped]}
    out["paired"] = {
        s.key: {o.key: v for o in sides if o.info["kind"] == "peer" if (v := _paired(s, o))}
        for s in sides
        if s.info["kind"] == "ours"
    }
    # A level served on another runtime, against the same level on ONNX Runtime, per round.
    for s in sides:
        if s.info["kind"] == "ours" and s.info.get("default") and s.key != s.info["level"]:
            ort = next((o for o in sides if o.key == s.info["level"]), None)
            if ort is not None and (v := _paired(s, ort)):
                out["paired"][s.key][ort.key] = v
    return out
