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
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedder.errors import EmbedderError
from embedder.tools.bench import report
from embedder.tools.bench import rerank as rag
from embedder.tools.bench.backends_run import measure_backends
from embedder.tools.bench.machine import Noise, machine_info
from embedder.tools.bench.plan import Options, parse
from embedder.tools.bench.run_inprocess import (
    measure_engines,
    measure_peaks,
    measure_peers,
    measure_rerank_engine,
)
from embedder.tools.bench.run_levels import prepare
from embedder.tools.bench.run_servers import Started, load_servers, load_weight, start_servers
from embedder.tools.bench.scenarios import Clock, Scheduler
from embedder.tools.corpus import corpus


def measure(opts: Options) -> dict[str, Any]:
    """The run's raw numbers, phase by phase; the servers are stopped and the temporary folder
    removed whatever happens."""
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
        sched = Scheduler(clock, load_weight(opts, levels, rerankers, servers))
        measure_engines(opts, clock, levels, texts, result)
        measure_peaks(opts, clock, levels, result)
        measure_peers(opts, clock, every, files, texts, query, result)
        measure_rerank_engine(opts, clock, rerankers, query, docs, result)
        measure_backends(opts, clock, every, texts, (query, docs), result)
        load_servers(opts, sched, levels, rerankers, files, query, servers)
    finally:
        for _, srv, _ in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["noise"] = noise.report()
    result["elapsed_s"] = clock.elapsed
    return result


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
    # latest.* for the README, and the run's dated copy
    stamp = report.save(opts.out_dir, ("latest", "run-{stamp}"), result, markdown)
    print(markdown)
    print(
        f"elapsed: {result['elapsed_s']:.0f} s; written to {opts.out_dir}/latest.{{json,md}} "
        f"and run-{stamp}.{{json,md}}"
    )
    return 0
