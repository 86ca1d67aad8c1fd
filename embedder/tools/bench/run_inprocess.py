"""The in-process phase of a run, while the servers sit ready and idle: the engine of every
level (the limit), the machine's GEMM peaks, then the peer, back to back, so the ratios
between them come from the same minutes; and the reranker's limit."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from embedder.catalog import BuiltFile
from embedder.tools.bench import engine, forms, peaks, peer_torch, peers
from embedder.tools.bench import rerank as rag
from embedder.tools.bench.machine import Others, cores
from embedder.tools.bench.plan import Options, served_settings
from embedder.tools.bench.run_levels import Level
from embedder.tools.bench.scenarios import Clock
from embedder.tools.bench.stats import median

PEER_LEVEL = "starter:4"  # all-minilm-l6-v2 FP32: the weights sentence-transformers runs


def measure_engines(
    opts: Options, clock: Clock, levels: list[Level], texts: list[str], result: dict[str, Any]
) -> None:
    """Each level's limit on every core, into `result["levels"]`: on the runtime the servers
    compute it on."""
    settings = served_settings(opts)
    for lv in levels:
        clock.say(f"engine (the limit) for {lv.key} {lv.spec.id} on {cores()} threads")
        others = Others()
        eng = engine.measure(
            lv.store,
            lv.spec,
            texts,
            threads=cores(),
            rounds=opts.limit_rounds,
            batch=opts.batch,
            request_slices=opts.request_slices,
            idle_texts=opts.idle_texts,
            budget=opts.engine_seconds,
            only=opts.limit_layouts,
            sampled=opts.catalog == "shapes",
            settings=settings,
        )
        row = asdict(eng) | {"others_cpu_share": others.share()}
        result["levels"].append(lv.describe() | {"engine": row})
        lone = median(list((eng.single_ms or eng.single_ms_1t).values()))
        clock.say(f"  {eng.texts_per_s:.1f} texts/s, single text {lone:.2f} ms ({eng.runtime})")


def measure_peers(
    opts: Options,
    clock: Clock,
    every: list[Level],
    files: dict[str, Path],
    texts: list[str],
    query: str,
    result: dict[str, Any],
) -> None:
    """The peers for this catalog: on the starter catalog into `result["peers"]` (and
    sentence-transformers FP32's row into `result["peer"]`, which the older reports read); on
    the shapes catalog into `result["peer"]`, with the reranker's limit too (measured
    alternately with its peer)."""
    levels = [lv for lv in every if lv.spec.kind == "embedding"]
    rerankers = [lv for lv in every if lv.spec.kind == "rerank"]
    if opts.peer and opts.catalog == "shapes":
        result["peer"] = run_torch_peers(opts, clock, every, files, query)
        for lv in rerankers:  # the limit, measured alternately with the peer
            got = result["peer"]["models"].get(lv.spec.id, {})
            if "ours" in got:
                result["rerank"]["engine"] = got["ours"] | {
                    "others_cpu_share": got.get("others_cpu_share")
                }
    elif opts.peer and any(lv.key == PEER_LEVEL for lv in levels):
        clock.say(f"the peers {', '.join(opts.peers)} and our levels of the same model")
        others = Others()
        settings = served_settings(opts)
        got = peers.measure(opts, clock, levels, files, texts, files["corpus"].parent, settings)
        result["peers"] = got | {"others_cpu_share": others.share()}
        st = got["contenders"].get(peers.REFERENCE)
        result["peer"] = st or {"skipped": f"{peers.REFERENCE} is not among --peers"}
    elif opts.peer:
        result["peer"] = {"skipped": f"the FP32 level ({PEER_LEVEL}) is not measured"}


def measure_rerank_engine(
    opts: Options,
    clock: Clock,
    rerankers: list[Level],
    query: str,
    docs: list[str],
    result: dict[str, Any],
) -> None:
    """The reranker in this process: RAG calls one by one (what the peer is compared with),
    unless its peer's run measured them, and the limit (all pairs as one plan), which the
    server under load is compared with."""
    for lv in rerankers if "engine" not in result.get("rerank", {}) else ():
        clock.say(f"engine (call by call) for {lv.spec.id}: RAG calls {opts.rerank_calls}")
        others = Others()
        row = rag.engine(
            lv.store,
            lv.spec,
            query,
            docs,
            threads=cores(),
            calls=dict(opts.rerank_calls),
            until=time.monotonic() + opts.engine_seconds * 2,
        )
        result["rerank"]["engine"] = row | {"others_cpu_share": others.share()}
        clock.say(f"  {row['pairs_per_s']:.1f} pairs/s")
    crossing = [lv for lv in rerankers if lv.spec.scorer != "cosine"][:1]
    for lv in crossing if "limit" not in result.get("rerank", {}) else ():
        clock.say(f"limit for {lv.spec.id}: {len(docs)} pairs as one plan on {cores()} runners")
        others = Others()
        row = rag.pooled_limit(lv.store, lv.spec, query, docs, threads=cores())
        result["rerank"]["limit"] = row | {"others_cpu_share": others.share()}
        clock.say(f"  {row['pairs_per_s']:.1f} pairs/s")


def measure_peaks(opts: Options, clock: Clock, levels: list[Level], result: dict[str, Any]) -> None:
    """The machine's GEMM peaks, then per level its share of the matching peak and its op
    profile (one 16 x 48-token batch of random ids, 1 thread)."""
    threads = tuple(sorted({1, cores()}))
    clock.say(f"machine peaks: ORT GEMM FP32 / u8s8 / u8u8 on {threads} threads")
    result["peaks"] = peaks.gemm_peaks(threads, seconds=0.2 if opts.quick else 0.6)
    rng = np.random.default_rng(opts.seed)
    ids = rng.integers(1000, 20000, (16, 48)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feeds["token_type_ids"] = np.zeros_like(ids)
    for lv, row in zip(levels, result["levels"], strict=True):
        path = lv.store.path(lv.spec, lv.spec.onnx or "")
        eng = row["engine"]
        ops = peaks.model_ops_per_token(path)
        row["peak"] = peaks.share_of_peak(
            ops, eng["tokens_per_s"], lv.spec.precision, result["peaks"]["peak_gops"], cores()
        ) | {"ops_per_token": ops}
        row["profile"] = peaks.op_profile(path, feeds)
        if (fp32 := _int8_source(lv)) is not None:
            clock.say(f"INT8 recipe, as built vs other INT8 forms, for {lv.spec.id}")
            seconds = 1.0 if opts.quick else 4.0
            row["recipe_forms"] = forms.recipe_forms(fp32, path, ((16, 48), (1, 12)), seconds)


def _int8_source(lv: Level) -> Path | None:
    """The FP32 graph the level's INT8 file is quantized from (None: no such level)."""
    f = next((f for f in lv.spec.files if f.name == lv.spec.onnx), None)
    o = f.origin if f is not None else None
    if not isinstance(o, BuiltFile) or not o.recipe.startswith("quantize") or not o.inputs:
        return None
    ref = o.inputs[0]
    return lv.store.path(lv.catalog.get(ref.model), ref.name)


def run_torch_peers(
    opts: Options, clock: Clock, levels: list[Level], files: dict[str, Path], query: str
) -> dict[str, Any]:
    """The torch peer on each FP32 stand-in measured (same weights, texts, threads), each in
    its own process, after checking it computes the same function as ours."""
    out: dict[str, Any] = {"models": {}}
    for lv in levels:
        if lv.spec.id not in peer_torch.PEER_OF:
            continue
        clock.say(f"the peer (torch, same weights) for {lv.spec.id}")
        argv = ["--model", lv.spec.id, "--models-root", str(opts.models_root)]
        argv += ["--threads", str(cores()), "--max-tokens", str(lv.spec.max_tokens)]
        argv += ["--batch", "32", "--seconds", str(opts.peer_seconds)]
        if lv.spec.kind == "rerank":
            calls = ",".join(f"{n}:{c}" for n, c in opts.rerank_calls)
            argv += ["--texts", str(files["docs"]), "--query", query, "--calls", calls]
        else:
            argv += ["--texts", str(files["corpus"]), "--rounds", str(opts.peer_rounds)]
            argv += ["--idle", str(opts.idle_texts)]
            measured = {x.spec.id for x in levels}
            ours = [m for m in peer_torch.COMPARED.get(lv.spec.id, ()) if m in measured]
            argv += ["--ours", ",".join(ours)]
        others = Others()
        got = peer_torch.run(argv, timeout=opts.peer_timeout or opts.peer_seconds * 6 + 240)
        got["others_cpu_share"] = others.share()
        out["models"][lv.spec.id] = got
        rate = got.get("pairs_per_s") or got.get("texts_per_s") or 0.0
        clock.say(f"  {rate:.2f}/s {got.get('skipped', '')} check {got.get('check')}")
    return out
