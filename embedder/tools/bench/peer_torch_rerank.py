"""The cross-encoder peer: XLMRobertaForSequenceClassification on a stand-in's weights, checked
against our FP32 level, then RAG calls timed call by call alternately with ours, in FP32 and
in bf16 (whose logits are compared with FP32's)."""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.tools.bench.peer_torch_load import CHECK_TEXTS, bf16_twin, load_peer, our_level
from embedder.tools.bench.stats import median, percentile

MAX_LOGIT_DIFF = 1e-3  # logits: the same


class PairPeer:
    """XLMRobertaForSequenceClassification on (query, doc) pairs, as CrossEncoder.predict
    (sentence-transformers 6) drives it: pairs sorted by length, batches of 32, each padded to
    its longest, one logit per pair, back in the caller's order."""

    def __init__(self, model: Any, tokenizer: Any, batch: int) -> None:
        self.torch: Any = importlib.import_module("torch")
        self.model, self.tok, self.batch = model, tokenizer, batch

    def logits(self, query: str, docs: Sequence[str]) -> np.ndarray:
        order = np.argsort([-(len(query) + len(d)) for d in docs], kind="stable")
        out = np.zeros(len(docs), np.float32)
        for start in range(0, len(docs), self.batch):
            rows = order[start : start + self.batch]
            enc = self.tok.encode_batch([(query, docs[i]) for i in rows])
            feeds = {
                "input_ids": self.torch.tensor([e.ids for e in enc]),
                "attention_mask": self.torch.tensor([e.attention_mask for e in enc]),
            }
            out[rows] = self.model(**feeds).logits[:, 0].float().numpy()
        return out


def check_pairs(
    peer: PairPeer, models_root: Path, model_id: str, query: str, docs: Sequence[str]
) -> dict[str, Any]:
    from embedder.reranker import CrossEncoderReranker, Doc, PairScorer
    from embedder.sessions import SessionConfig, open_session
    from embedder.tokens import load_tokenizer

    store, spec = our_level(models_root, model_id)
    assert spec.onnx and spec.tokenizer
    session = open_session(store.path(spec, spec.onnx), SessionConfig(threads=1))
    tok = store.path(spec, spec.tokenizer)
    scorer = PairScorer(
        spec, session, load_tokenizer(tok, spec.max_tokens), load_tokenizer(tok, spec.max_tokens)
    )
    ranking = CrossEncoderReranker(scorer).rerank(
        query, [Doc(str(i), d) for i, d in enumerate(docs)], raw=True
    )
    mine = np.zeros(len(docs))
    for r in ranking.results:
        mine[r.index] = r.score
    del scorer, session
    gc.collect()
    theirs = peer.logits(query, docs).astype(np.float64)
    diff = float(np.abs(mine - theirs).max())
    return {"pairs": len(docs), "max_abs_diff": diff, "agrees": diff <= MAX_LOGIT_DIFF}


def bf16_check(peer: PairPeer, half: PairPeer, query: str, docs: Sequence[str]) -> dict[str, Any]:
    """bf16's logits against FP32's on the same pairs, and whether they rank the docs alike."""
    full, low = peer.logits(query, docs), half.logits(query, docs)
    same = bool(np.array_equal(np.argsort(-full, kind="stable"), np.argsort(-low, kind="stable")))
    return {"max_abs_diff": float(np.abs(full - low).max()), "same_order": same}


def measure_rerank(
    name: str,
    model_id: str,
    models_root: Path,
    query: str,
    docs: Sequence[str],
    *,
    calls: dict[int, int],
    batch: int,
    max_tokens: int,
    threads: int,
    bf16_calls: int = 0,
) -> dict[str, Any]:
    """RAG calls (1 query + n docs), `calls[n]` times each, ours (as a worker runs the
    cross-encoder), the peer's in FP32 and in bf16 alternately: latency per call and pairs/s
    of each. bf16 makes `bf16_calls` calls at most, the smallest first (0: all)."""
    from embedder.loading import Opener
    from embedder.planning import RunLimits
    from embedder.reranker import Doc
    from embedder.sessions import SessionConfig

    loaded = load_peer(PairPeer, name, model_id, models_root, batch=batch, max_tokens=max_tokens)
    peer, store, spec = loaded.peer, loaded.store, loaded.spec
    torch: Any = importlib.import_module("torch")
    out: dict[str, Any] = {"model": model_id, "load_s": loaded.load_s, "calls": {}}
    out["peer"] = "XLMRobertaForSequenceClassification (what CrossEncoder runs)"
    with torch.inference_mode():
        check = check_pairs(peer, models_root, model_id, query, docs[:CHECK_TEXTS])
        out["check"] = check
        if not check["agrees"]:
            why = f"the peer does not compute our FP32 function: {check}"
            return {"skipped": why, "check": check}
        half = bf16_twin(PairPeer, peer)
        out["bf16_check"] = bf16_check(peer, half, query, docs[:CHECK_TEXTS])
        config = SessionConfig(threads=threads)
        ours = Opener(store, config, RunLimits(), max_queue_wait=300).reranker(spec, None)
        items = [Doc(str(i), d) for i, d in enumerate(docs)]
        ours.rerank(query, items[:4])  # warm-up
        peer.logits(query, docs[:4])
        half.logits(query, docs[:4])
        took: dict[str, dict[int, list[float]]] = {"peer": {}, "ours": {}, "bf16": {}}
        for n, count in sorted(calls.items()):
            for _ in range(count):
                t0 = time.perf_counter()
                ours.rerank(query, items[:n])
                t1 = time.perf_counter()
                peer.logits(query, docs[:n])
                took["ours"].setdefault(n, []).append(t1 - t0)
                took["peer"].setdefault(n, []).append(time.perf_counter() - t1)
                if bf16_calls and sum(map(len, took["bf16"].values())) >= bf16_calls:
                    continue
                t2 = time.perf_counter()
                half.logits(query, docs[:n])
                took["bf16"].setdefault(n, []).append(time.perf_counter() - t2)
        del ours
        gc.collect()
    summary: dict[str, dict[str, Any]] = {}
    for who, by_n in took.items():
        pairs = sum(n * len(ts) for n, ts in by_n.items())
        seconds = sum(sum(ts) for ts in by_n.values())
        summary[who] = {"pairs_per_s": pairs / seconds if seconds else 0.0, "calls": {}}
        for n, ts in by_n.items():
            ms = [t * 1000 for t in ts]
            row = {"p50_ms": median(ms), "p99_ms": percentile(ms, 99), "n": len(ms)}
            summary[who]["calls"][str(n)] = row
    out |= summary["peer"]
    out["bf16"] = summary["bf16"] | out.pop("bf16_check") | {"emulated": bf16_calls == 1}
    out["ours"] = summary["ours"] | {
        "model": model_id,
        "threads": threads,
        "layout": f"{threads} runners, one shared single-thread session (as a worker); "
        "measured in the peer's process, call by call alternately with the peer",
    }
    return out
