"""The runtimes section of a benchmark run (`backends`), and the section alone:
`python -m embedder.tools.bench.backends_run [bench options]` prepares the levels the bench
would (`--catalog`, `--levels`, `--models-root`, ...), measures them side by side on both
runtimes and writes `backends.json` and `backends.md` beside the bench's reports (no server
and no peer: minutes instead of ten)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from embedder.tools.bench import backends
from embedder.tools.bench import rerank as rag
from embedder.tools.bench.machine import cores
from embedder.tools.bench.plan import Options
from embedder.tools.bench.run_levels import Level
from embedder.tools.bench.scenarios import Clock

BATCH_TEXTS = 128  # of the corpus (its mix of lengths), per contender and round


def measure_backends(
    opts: Options,
    clock: Clock,
    levels: Sequence[Level],
    texts: Sequence[str],
    rag_set: tuple[str, Sequence[str]],
    result: dict[str, Any],
) -> None:
    """Every level (and cross-encoder reranker) of the run, each on its contenders, into
    `result["backends"]`; `rag_set` is the reranker's query and documents."""
    info = result["backends"] = backends.machine()
    if "skipped" in info:
        clock.say(f"runtimes side by side: skipped ({info['skipped']})")
        return
    runners = cores()
    seconds = opts.engine_seconds * 0.5
    batch, lone = list(texts[:BATCH_TEXTS]), list(texts[: opts.idle_texts])
    query, docs = rag_set
    info |= {"runners": runners, "seconds": seconds, "levels": []}
    for lv in levels:
        spec = lv.spec
        if spec.kind == "rerank" and spec.scorer == "cosine":
            continue  # no session of its own: its embedding model's figures are its
        if clock.left < 0:
            info["levels"].append(_key(lv) | {"skipped": "the run's time budget is spent"})
            continue
        if spec.kind == "rerank":
            pairs = list(docs[: opts.rerank_load[0]])
            work = backends.pair_work(lv.store, spec, query, pairs, min(len(pairs), len(lone)))
        else:
            work = backends.embedding_work(lv.store, spec, batch, lone)
        clock.say(f"runtimes side by side for {_key(lv)['key']} {spec.id} on {runners} runners")
        row = backends.measure_model(lv.store, spec, work, runners=runners, seconds=seconds)
        info["levels"].append(_key(lv) | row)
        said = ", ".join(
            f"{c['label']} {c.get('texts_per_s', 0.0):.1f}/s" for c in row["contenders"]
        )
        clock.say(f"  {said}; auto: {row['auto']['label']}")


def _key(lv: Level) -> dict[str, Any]:
    name = lv.spec.level if lv.spec.level is not None else lv.spec.kind  # the reranker
    return {"key": f"{lv.catalog.name}:{name}", "catalog": lv.catalog.name}


def main(argv: Sequence[str] | None = None) -> int:
    from embedder.sessions import disable_ort_telemetry

    disable_ort_telemetry()
    from embedder.errors import EmbedderError
    from embedder.tools.bench import report, report_backends
    from embedder.tools.bench.machine import Noise, machine_info
    from embedder.tools.bench.plan import parse
    from embedder.tools.bench.run_levels import prepare
    from embedder.tools.corpus import corpus

    opts = parse(sys.argv[1:] if argv is None else argv)
    clock = Clock(opts.budget_s)
    noise = Noise()
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    result |= {"machine": machine_info(), "catalog": opts.catalog}
    try:
        levels, skipped = prepare(opts, clock)
    except EmbedderError as exc:
        print(f"bench: {exc.message}", file=sys.stderr)
        return 1
    texts = corpus(opts.corpus_size, opts.seed)
    rag_set: tuple[str, list[str]] = ("", [])
    rerankers = [lv for lv in levels if lv.spec.kind == "rerank" and lv.spec.scorer != "cosine"]
    if rerankers:
        lv = rerankers[0]
        tokenizer = lv.store.path(lv.spec, lv.spec.tokenizer or "")
        rag_set = rag.rag_set(tokenizer, opts.rerank_load[0], opts.seed)
    measure_backends(opts, clock, levels, texts, rag_set, result)
    result |= {"skipped": skipped, "noise": noise.report(), "elapsed_s": clock.elapsed}
    markdown = "\n".join(report_backends.section(result)) + "\n"
    report.save(opts.out_dir, ("backends", "backends-{stamp}"), result, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
