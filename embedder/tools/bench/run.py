"""One benchmark run: prepare the models and start the servers; once they are ready and idle,
measure the engine (the limit) of every level and then the peer, back to back, so the ratios
between them (INT8/FP32, ours/peer) come from the same minutes; then every load shape on each
server, level by level. Writes `latest.json` and `latest.md` and prints the Markdown.

Each measurement also records how much CPU other processes took meanwhile (a shared machine).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedder.catalog import BGE, SHAPES, STARTER, Catalog, ModelSpec
from embedder.errors import EmbedderError
from embedder.store.files import ModelStore
from embedder.tools.bench import engine, peaks, peer, peer_torch, report, server
from embedder.tools.bench import rerank as rag
from embedder.tools.bench.machine import Noise, Others, cores, machine_info
from embedder.tools.bench.plan import Options, Shape, parse
from embedder.tools.bench.scenarios import Clock, Scheduler, brief, run_load
from embedder.tools.bench.stats import median
from embedder.tools.corpus import corpus

PEER_LEVEL = "starter:4"  # all-minilm-l6-v2 FP32: the weights sentence-transformers runs


@dataclass(frozen=True)
class Level:
    catalog: Catalog
    spec: ModelSpec
    store: ModelStore

    @property
    def key(self) -> str:
        return f"{self.catalog.name}:{self.spec.level}"

    def describe(self) -> dict[str, Any]:
        s = self.spec
        return {"key": self.key, "catalog": self.catalog.name, "level": s.level, "model": s.id} | {
            "precision": s.precision,
            "max_tokens": s.max_tokens,
            "description": s.description,
        }


def prepare(opts: Options, clock: Clock) -> tuple[list[Level], list[str]]:
    """Starter levels (built once in the models root) and BGE levels already on disk; or the
    shapes catalog's levels and its reranker (built once: GB-sized, minutes the first time)."""
    levels: list[Level] = []
    skipped: list[str] = []
    if opts.catalog == "shapes":
        store = ModelStore(opts.models_root, SHAPES, offline=True)
        specs = [SHAPES.levels()[n] for n in opts.levels if n in SHAPES.levels()]
        for stand_in in [*specs, SHAPES.default_reranker()]:
            clock.say(f"preparing {stand_in.id} in {opts.models_root} (RANDOM WEIGHTS stand-in)")
            store.ensure(stand_in)
            levels.append(Level(SHAPES, stand_in, store))
        return levels, skipped
    starter = ModelStore(opts.models_root, STARTER, offline=True)
    for n in opts.levels:
        spec = STARTER.levels().get(n)
        if spec is None:
            skipped.append(f"starter level {n}: no such level")
            continue
        clock.say(f"preparing starter level {n} ({spec.id}) in {opts.models_root}")
        starter.ensure(spec)
        levels.append(Level(STARTER, spec, starter))
    if opts.bge:
        bge = ModelStore(opts.models_root, BGE, offline=True)
        for n in opts.levels:
            spec = BGE.levels().get(n)
            if spec is None:
                continue
            if missing := bge.missing(spec):  # never downloaded nor built here
                skipped.append(f"bge level {n} ({spec.id}): not in the models root ({missing[0]})")
                continue
            levels.append(Level(BGE, spec, bge))
    return levels, skipped


Started = list[tuple[Catalog, server.Server, dict[str, Any]]]


def start_servers(
    opts: Options, clock: Clock, levels: list[Level], tmp: Path, started: Started
) -> None:
    """Every (catalog, layout) server at once, into `started` (so the caller can stop each one
    whatever happens); returns once all are ready (or failed)."""
    for catalog in (STARTER, BGE, SHAPES):
        ids = [lv.spec.id for lv in levels if lv.catalog is catalog]
        for workers, threads in opts.layouts if ids else ():
            name = f"{workers}x{threads}"
            clock.say(f"starting gunicorn {name} ({catalog.name}: {', '.join(ids)})")
            srv = server.start(
                tmp / f"{catalog.name}-{name}",
                catalog=catalog.name,
                models_root=opts.models_root,
                models=ids,
                workers=workers,
                threads=threads,
                extra_env=dict(opts.server_env),
            )
            started.append((catalog, srv, {"layout": name, "catalog": catalog.name}))
    began = time.monotonic()
    for _, srv, info in started:
        try:
            srv.wait_ready(timeout=max(30.0, 240.0 - (time.monotonic() - began)))
            info["ready_s"] = time.monotonic() - began
            info["scenarios"] = []
        except (RuntimeError, TimeoutError, OSError) as exc:
            info["error"] = str(exc)


def measure(opts: Options) -> dict[str, Any]:
    clock = Clock(opts.budget_s)
    noise = Noise()
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    result |= {"mode": "quick" if opts.quick else "full", "machine": machine_info()}
    every, skipped = prepare(opts, clock)
    levels = [lv for lv in every if lv.spec.kind == "embedding"]
    rerankers = [lv for lv in every if lv.spec.kind == "rerank"]
    texts = corpus(opts.corpus_size, opts.seed)
    result |= {"skipped": skipped, "options": _options(opts), "levels": [], "servers": []}
    result["peer"] = {"skipped": "--no-peer"}
    tmp = Path(tempfile.mkdtemp(prefix="embedder-bench-"))
    files = {"corpus": tmp / "corpus.json", "idle": tmp / "idle.json"}
    files["corpus"].write_text(json.dumps(texts), encoding="utf-8")
    files["idle"].write_text(json.dumps(texts[: opts.idle_texts]), encoding="utf-8")
    query, docs = "", list[str]()
    if rerankers:
        lv = rerankers[0]
        most = max([n for n, _ in opts.rerank_calls] + [opts.rerank_load[0]])
        query, docs = rag.rag_set(lv.store.path(lv.spec, lv.spec.tokenizer or ""), most, opts.seed)
        files["docs"] = tmp / "docs.json"
        files["docs"].write_text(json.dumps(docs), encoding="utf-8")
        result["rerank"] = {"query": query, "doc_tokens": rag.DOC_TOKENS, "docs": len(docs)}
    servers: Started = []
    try:
        start_servers(opts, clock, every, tmp, servers)
        result["servers"] = [info for _, _, info in servers]
        weight = sum(
            opts.timing(shape).weight
            for lv in levels
            for cat, _, info in servers
            if cat is lv.catalog and "error" not in info
            for shape, _ in opts.runs(lv.spec.level or 0)
        ) + sum(
            opts.rerank_timing.weight * len(rerank_shapes(opts))
            for lv in rerankers
            for cat, _, info in servers
            if cat is lv.catalog and "error" not in info
        )
        sched = Scheduler(clock, weight)
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
            )
            row = asdict(eng) | {"others_cpu_share": others.share()}
            result["levels"].append(lv.describe() | {"engine": row})
            lone = median(list((eng.single_ms or eng.single_ms_1t).values()))
            clock.say(f"  {eng.texts_per_s:.1f} texts/s, single text {lone:.2f} ms")
        measure_peaks(opts, clock, levels, result)
        if opts.peer and opts.catalog == "shapes":
            result["peer"] = run_torch_peers(opts, clock, every, files, query)
            for lv in rerankers:  # the limit, measured alternately with the peer
                got = result["peer"]["models"].get(lv.spec.id, {})
                if "ours" in got:
                    result["rerank"]["engine"] = got["ours"] | {
                        "others_cpu_share": got.get("others_cpu_share")
                    }
        elif opts.peer and any(lv.key == PEER_LEVEL for lv in levels):
            clock.say("sentence-transformers (the peer)")
            result["peer"] = run_peer(opts, files["corpus"], clock)
        elif opts.peer:
            result["peer"] = {"skipped": f"the FP32 level ({PEER_LEVEL}) is not measured"}
        for lv in rerankers if "engine" not in result.get("rerank", {}) else ():
            clock.say(f"engine (the limit) for {lv.spec.id}: RAG calls {opts.rerank_calls}")
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
        for lv in levels:
            for cat, srv, info in servers:
                if cat is lv.catalog and "error" not in info:
                    info["scenarios"] += load_level(opts, sched, srv, info, lv, files)
        for lv in rerankers:
            for cat, srv, info in servers:
                if cat is lv.catalog and "error" not in info:
                    info["rerank"] = load_rerank(opts, sched, srv, info, lv, files, query)
        for _, srv, info in servers:
            if "error" not in info:
                info["memory"] = srv.memory()
    finally:
        for _, srv, _ in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["noise"] = noise.report()
    result["elapsed_s"] = clock.elapsed
    return result


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


def run_peer(opts: Options, texts: Path, clock: Clock) -> dict[str, Any]:
    out = peer.run(
        texts,
        threads=cores(),
        rounds=opts.peer_rounds,
        batch=opts.batch,
        max_tokens=STARTER.get("all-minilm-l6-v2").max_tokens,
        idle=opts.idle_texts,
        seconds=opts.peer_seconds,
        timeout=opts.peer_seconds + 90,
    )
    clock.say(f"  {out.get('texts_per_s', 0.0):.1f} texts/s {out.get('skipped', '')}")
    return out


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


def rerank_shapes(opts: Options) -> list[Shape]:
    """The RAG calls at idle (c1, one size each) and the load shape (pairs/s)."""
    return [Shape(n, 1) for n, _ in opts.rerank_calls] + [Shape(*opts.rerank_load)]


def load_rerank(
    opts: Options,
    sched: Scheduler,
    srv: server.Server,
    info: dict[str, Any],
    lv: Level,
    files: dict[str, Path],
    query: str,
) -> list[dict[str, Any]]:
    """RAG calls (1 query + n docs) through REST /v1/rerank: waves of c calls; the calls'
    p50/p99 and pairs/s (`texts_per_s` counts documents)."""
    rows: list[dict[str, Any]] = []
    for shape in rerank_shapes(opts):
        row: dict[str, Any] = {"model": lv.spec.id, "docs": shape.batch}
        row |= {"concurrency": shape.concurrency, "transport": opts.transports[0]}
        seconds = sched.slot(opts.rerank_timing)
        if seconds is None:
            row["error"] = "skipped: out of time budget"
        else:
            row |= run_load(
                opts,
                srv,
                opts.transports[0],
                lv.spec.id,
                shape,
                files["docs"],
                seconds,
                query=query,
            )
        rows.append(row)
        what = f"rerank {shape.batch} docs x c{shape.concurrency}"
        sched.clock.say(f"{info['layout']} {lv.spec.id} {what}: {brief(row)}")
    return rows


def load_level(
    opts: Options,
    sched: Scheduler,
    srv: server.Server,
    info: dict[str, Any],
    lv: Level,
    files: dict[str, Path],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shape, transport in opts.runs(lv.spec.level or 0):
        row: dict[str, Any] = {"level": lv.key, "model": lv.spec.id, "transport": transport}
        row |= {"batch": shape.batch, "concurrency": shape.concurrency}
        seconds = sched.slot(opts.timing(shape))
        if seconds is None:
            row["error"] = "skipped: out of time budget"
        else:
            idle = shape.batch == 1 and shape.concurrency == 1
            texts = files["idle" if idle else "corpus"]
            row |= run_load(opts, srv, transport, lv.spec.id, shape, texts, seconds)
        rows.append(row)
        sched.clock.say(f"{info['layout']} {lv.spec.id} {transport} {shape.name}: {brief(row)}")
    return rows


def _options(opts: Options) -> dict[str, Any]:
    out = asdict(opts)
    out["models_root"] = str(opts.models_root)
    out["out_dir"] = str(opts.out_dir)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    try:
        result = measure(opts)
    except EmbedderError as exc:
        print(f"bench: {exc.message}", file=sys.stderr)
        return 1
    result |= report.analyse(result)
    markdown = report.markdown(result)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    # latest.* for the README; a dated copy of each run, so A/B runs can be compared later.
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in ("latest", f"run-{stamp}"):
        (opts.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (opts.out_dir / f"{name}.md").write_text(markdown)
    print(markdown)
    print(
        f"elapsed: {result['elapsed_s']:.0f} s; written to {opts.out_dir}/latest.{{json,md}} "
        f"and run-{stamp}.{{json,md}}"
    )
    return 0
