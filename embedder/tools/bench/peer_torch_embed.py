"""The embedding peer: BertModel + CLS pooling + L2 on a stand-in's weights, checked against
our FP32 level, then timed in FP32 and in bf16, in rounds alternated with our levels (texts/s,
one text at a time); bf16's vectors compared with FP32's."""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.tools.bench.peer_torch_load import CHECK_TEXTS, bf16_twin, load_peer, our_level
from embedder.tools.bench.stats import median

MIN_COSINE = 0.9999  # vectors: the same function, up to float32 summation order


class EmbedPeer:
    """BertModel + CLS pooling + L2 normalisation, as SentenceTransformer.encode drives it."""

    def __init__(self, model: Any, tokenizer: Any, batch: int) -> None:
        self.torch: Any = importlib.import_module("torch")
        self.model, self.tok, self.batch = model, tokenizer, batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        for start in range(0, len(texts), self.batch):
            rows = order[start : start + self.batch]
            enc = self.tok.encode_batch([texts[i] for i in rows])
            ids = self.torch.tensor([e.ids for e in enc])
            feeds = {
                "input_ids": ids,
                "attention_mask": self.torch.tensor([e.attention_mask for e in enc]),
                "token_type_ids": self.torch.zeros_like(ids),
            }
            cls = self.model(**feeds).last_hidden_state[:, 0]
            cls = self.torch.nn.functional.normalize(cls, p=2, dim=1)
            out[rows] = cls.float().numpy()
        return out


def check_embed(
    peer: EmbedPeer, models_root: Path, model_id: str, texts: Sequence[str]
) -> dict[str, Any]:
    from embedder.tools.bench.engine import open_embedder

    store, spec = our_level(models_root, model_id)
    ours = open_embedder(store, spec, 1)
    mine = np.asarray(ours.embed(texts).vectors, np.float32)
    del ours
    gc.collect()
    theirs = peer.encode(texts)
    cos = np.sum(mine * theirs, axis=1) / (
        np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    return {
        "texts": len(texts),
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(np.abs(mine - theirs).max()),
        "agrees": bool(cos.min() >= MIN_COSINE),
    }


def _our_embedders(models_root: Path, ids: Sequence[str], threads: int) -> dict[str, list[Any]]:
    """Our levels as a worker runs them: one single-thread session shared by a runner thread
    per core (the limit's Nx1 layout)."""
    from embedder.tools.bench.engine import open_embedder

    out: dict[str, list[Any]] = {}
    for model_id in ids:
        store, spec = our_level(models_root, model_id)
        one = open_embedder(store, spec, 1)
        out[model_id] = [one] * threads
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    x, y = a.astype(np.float64), b.astype(np.float64)
    cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _rates(rates: list[float]) -> dict[str, Any]:
    mid = median(rates)
    spread = (max(rates) - min(rates)) / mid if mid else 0.0
    return {"texts_per_s": mid, "rounds": rates, "spread": spread}


def measure_embed(
    name: str,
    model_id: str,
    models_root: Path,
    texts: Sequence[str],
    *,
    batch: int,
    max_tokens: int,
    rounds: int,
    idle: int,
    seconds: float,
    ours: Sequence[str],
    threads: int,
    bf16_rounds: int = 0,
) -> dict[str, Any]:
    """The peer's texts/s over the corpus, in FP32 and in bf16, in rounds interleaved with ours
    on the levels `ours` (ours, then the peer FP32, then bf16, round after round): on a shared
    machine the ratio of each round pair is what holds, not either figure alone. bf16 runs
    `bf16_rounds` rounds at most (0: all; one where the CPU only emulates it)."""
    from embedder.tools.bench.engine import round_rate

    loaded = load_peer(EmbedPeer, name, model_id, models_root, batch=batch, max_tokens=max_tokens)
    peer = loaded.peer
    torch: Any = importlib.import_module("torch")
    with torch.inference_mode():
        check = check_embed(peer, models_root, model_id, _check_texts(texts))
        if not check["agrees"]:
            why = f"the peer does not compute our FP32 function: {check}"
            return {"skipped": why, "check": check}
        half = bf16_twin(EmbedPeer, peer)
        engines = _our_embedders(models_root, ours, threads)
        for group in engines.values():
            group[0].embed(texts[:4])  # warm-up
        until = time.perf_counter() + seconds
        warm = texts[: min(len(texts), batch)]
        peer.encode(warm)  # warm-up
        half.encode(warm[:4])
        rates: list[float] = []
        halves: list[float] = []
        mine: dict[str, list[float]] = {m: [] for m in engines}
        vectors: dict[str, np.ndarray] = {}
        for r in range(rounds):
            if r >= 2 and time.perf_counter() > until:
                break
            for m, group in engines.items():
                mine[m].append(round_rate(group, texts))
            for who, model, got in (("fp32", peer, rates), ("bf16", half, halves)):
                if who == "bf16" and bf16_rounds and len(halves) >= bf16_rounds:
                    continue
                t0 = time.perf_counter()
                vectors[who] = model.encode(texts)
                got.append(len(texts) / (time.perf_counter() - t0))
        del engines
        gc.collect()
        singles: list[float] = []
        for i, t in enumerate(texts[:idle]):
            if i >= 4 and time.perf_counter() > until:
                break
            t0 = time.perf_counter()
            peer.encode([t])
            singles.append((time.perf_counter() - t0) * 1000)
    paired = {m: [a / b for a, b in zip(v, rates, strict=True)] for m, v in mine.items()}
    paired16 = {m: [a / b for a, b in zip(v, halves, strict=False)] for m, v in mine.items()}
    bf16 = _rates(halves) | cosines(vectors["bf16"], vectors["fp32"])
    bf16["emulated"] = bf16_rounds == 1
    bf16["interleaved"] = {m: {"ratio": median(v)} for m, v in paired16.items()}
    return {
        "model": model_id,
        "peer": "BertModel + CLS pooling (what sentence-transformers runs for BGE)",
        "check": check,
        **_rates(rates),
        "single_ms_p50": median(singles),
        "singles": len(singles),
        "load_s": loaded.load_s,
        "max_tokens": max_tokens,
        "interleaved": {
            m: {"texts_per_s": median(v), "rounds": v, "ratio": median(paired[m])}
            for m, v in mine.items()
        },
        "bf16": bf16,
    }


def _check_texts(texts: Sequence[str]) -> list[str]:
    """A few texts of varied lengths (the corpus' first ones and its longest)."""
    longest = sorted(texts, key=len)[-2:]
    return [*texts[: CHECK_TEXTS - len(longest)], *longest]
