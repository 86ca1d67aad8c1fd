"""The reranker's RAG call in the benchmark: 1 query + N documents of ~100 tokens.

The documents are made from the project's corpus (deterministic, no download), cut to about
`DOC_TOKENS` tokens by the reranker's own tokenizer. The in-process limit runs the cross-encoder
as a worker does (`Opener.reranker`: one single-thread session shared by a runner per core,
behind the micro-batcher that plans the pairs by cost), with no HTTP in between, call by call
(what the peer is compared with). Its limit (`pooled_limit`) plans the pairs of one call of all
the documents as one set, pulled by a thread per runner with nothing between calls: what the
server under load is compared with (measured no faster than call by call: docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from embedder.batcher import Batcher
from embedder.catalog import ModelSpec
from embedder.loading import Opener
from embedder.planning import RunLimits
from embedder.reranker import CrossEncoderReranker, Doc
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from embedder.tools.bench.engine import pull
from embedder.tools.bench.stats import median, percentile
from embedder.tools.corpus import corpus

DOC_TOKENS = 100


def rag_set(tokenizer: Path, docs: int, seed: int) -> tuple[str, list[str]]:
    """A short query and `docs` documents of about DOC_TOKENS tokens (special tokens aside)."""
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_truncation()
    tok.no_padding()
    pool = corpus(docs * 4, seed)
    query = next(t for t in pool if 6 <= len(t.split()) <= 16)
    words = " ".join(pool).split()
    out: list[str] = []
    at = 0
    while len(out) < docs:
        doc: list[str] = []
        while len(tok.encode(" ".join(doc), add_special_tokens=False).ids) < DOC_TOKENS:
            doc.append(words[at % len(words)])
            at += 1
        out.append(" ".join(doc))
    return query, out


def engine(
    store: ModelStore,
    spec: ModelSpec,
    query: str,
    docs: Sequence[str],
    *,
    threads: int,
    calls: dict[int, int],
    until: float,
) -> dict[str, Any]:
    """Latency of each RAG call size (`calls[n]` calls of n docs; one call at least each, past
    `until` no more) and the pairs/s over all of them."""
    # as the benchmark's server is set (EMBEDDER_MAX_QUEUE_WAIT=300): a long call is not cut off
    opener = Opener(store, SessionConfig(threads=threads), RunLimits(), max_queue_wait=300)
    began = time.perf_counter()
    reranker = opener.reranker(spec, None)
    load_s = time.perf_counter() - began
    items = [Doc(str(i), d) for i, d in enumerate(docs)]
    reranker.rerank(query, items[:4])  # warm-up
    out: dict[str, Any] = {"model": spec.id, "threads": threads, "load_s": load_s, "calls": {}}
    out["layout"] = f"{threads} runners, one shared single-thread session (as a worker)"
    pairs, seconds = 0, 0.0
    for n, count in calls.items():
        times: list[float] = []
        for k in range(count):
            if k >= 1 and time.monotonic() > until:
                break
            t0 = time.perf_counter()
            reranker.rerank(query, items[:n])
            times.append(time.perf_counter() - t0)
        pairs, seconds = pairs + n * len(times), seconds + sum(times)
        ms = [t * 1000 for t in times]
        out["calls"][str(n)] = {"p50_ms": median(ms), "p99_ms": percentile(ms, 99), "n": len(ms)}
    out["pairs_per_s"] = pairs / seconds if seconds else 0.0
    return out


def pooled_limit(
    store: ModelStore,
    spec: ModelSpec,
    query: str,
    docs: Sequence[str],
    *,
    threads: int,
    rounds: int = 1,
) -> dict[str, Any]:
    """pairs/s of `docs` against `query` as one planned set (tokenized once per round, its
    sub-batches pulled by a thread per runner on one single-thread session, as a worker's).
    The scorer is taken from the served reranker and its micro-batcher closed at once: its
    runner threads would keep the session (GB-sized) alive for the rest of the benchmark's
    process."""
    opener = Opener(store, SessionConfig(threads=1), RunLimits())
    reranker = opener.reranker(spec, None)
    assert isinstance(reranker, CrossEncoderReranker) and isinstance(reranker.runner, Batcher)
    reranker.runner.close()
    scorer = reranker.scorer
    items = [Doc(str(i), d) for i, d in enumerate(docs)]
    pull([scorer] * threads, scorer.tokenize(query, items[: 2 * threads]))  # warm-up
    seconds: list[float] = []
    for _ in range(max(1, rounds)):
        began = time.perf_counter()
        pull([scorer] * threads, scorer.tokenize(query, items))
        seconds.append(time.perf_counter() - began)
    took = median(seconds)
    return {
        "model": spec.id,
        "threads": threads,
        "pairs": len(items),
        "rounds": len(seconds),
        "pairs_per_s": len(items) / took if took else 0.0,
        "layout": f"{threads} runners, one shared single-thread session, one plan for all pairs",
    }
