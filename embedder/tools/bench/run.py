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

from embedder.catalog import BGE, STARTER, Catalog, ModelSpec
from embedder.errors import EmbedderError
from embedder.store.files import ModelStore
from embedder.tools.bench import engine, peaks, peer, report, server
from embedder.tools.bench.machine import Noise, Others, cores, machine_info
from embedder.tools.bench.plan import Options, parse
from embedder.tools.bench.scenarios import Clock, Scheduler, brief, run_load
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
    """Starter levels (built once in the models root) and BGE levels already on disk."""
    levels: list[Level] = []
    skipped: list[str] = []
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
    for catalog in (STARTER, BGE):
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
    levels, skipped = prepare(opts, clock)
    texts = corpus(opts.corpus_size, opts.seed)
    result |= {"skipped": skipped, "options": _options(opts), "levels": [], "servers": []}
    result["peer"] = {"skipped": "--no-peer"}
    tmp = Path(tempfile.mkdtemp(prefix="embedder-bench-"))
    files = {"corpus": tmp / "corpus.json", "idle": tmp / "idle.json"}
    files["corpus"].write_text(json.dumps(texts), encoding="utf-8")
    files["idle"].write_text(json.dumps(texts[: opts.idle_texts]), encoding="utf-8")
    servers: Started = []
    try:
        start_servers(opts, clock, levels, tmp, servers)
        result["servers"] = [info for _, _, info in servers]
        weight = sum(
            opts.timing(shape).weight
            for lv in levels
            for cat, _, info in servers
            if cat is lv.catalog and "error" not in info
            for shape, _ in opts.runs(lv.spec.level or 0)
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
            )
            row = asdict(eng) | {"others_cpu_share": others.share()}
            result["levels"].append(lv.describe() | {"engine": row})
            clock.say(f"  {eng.texts_per_s:.1f} texts/s, single text {eng.single_p50:.2f} ms")
        measure_peaks(opts, clock, levels, result)
        if opts.peer and any(lv.key == PEER_LEVEL for lv in levels):
            clock.say("sentence-transformers (the peer)")
            result["peer"] = run_peer(opts, files["corpus"], clock)
        elif opts.peer:
            result["peer"] = {"skipped": f"the FP32 level ({PEER_LEVEL}) is not measured"}
        for lv in levels:
            for cat, srv, info in servers:
                if cat is lv.catalog and "error" not in info:
                    info["scenarios"] += load_level(opts, sched, srv, info, lv, files)
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
