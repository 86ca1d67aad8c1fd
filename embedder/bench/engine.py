"""The limit: the in-process engine on the same model and cores, with no HTTP in between.

`Embedder.embed` on the whole corpus at once is the best batching the engine has: it sorts
every text by length and runs sub-batches of 32, so padding is as small as it gets. The same
engine on request-sized slices (the texts of one batched request, in their order) and on one
text at a time gives the reference each server load shape is compared with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedder.bench.stats import median
from embedder.catalog import ModelSpec
from embedder.encoder import BatchLimits, Embedder
from embedder.sessions import SessionConfig, open_session
from embedder.store import ModelStore
from embedder.tokens import load_tokenizer


@dataclass
class EngineResult:
    model: str
    threads: int
    texts_per_s: float  # the limit: whole corpus, length-sorted sub-batches of 32
    tokens_per_s: float
    rounds: list[float]
    spread: float
    corpus_tokens: int
    request_texts_per_s: float = 0.0  # the same engine on request-sized slices, in order
    single_ms: dict[str, float] = field(default_factory=dict)  # text index -> ms, all cores
    single_ms_1t: dict[str, float] = field(default_factory=dict)  # the same on one thread

    @property
    def single_p50(self) -> float:
        return median(list(self.single_ms.values()))

    @property
    def single_p50_1t(self) -> float:
        return median(list(self.single_ms_1t.values()))


def open_embedder(store: ModelStore, spec: ModelSpec, threads: int) -> Embedder:
    """An Embedder as a worker builds it (same session options), on `threads` ORT threads."""
    assert spec.onnx and spec.tokenizer
    session = open_session(store.path(spec, spec.onnx), SessionConfig(threads=threads))
    tokenizer = load_tokenizer(store.path(spec, spec.tokenizer), spec.max_tokens)
    return Embedder(spec, session, tokenizer, BatchLimits(max_batch=32))


def _timed(embedder: Embedder, texts: Sequence[str]) -> tuple[float, int]:
    began = time.perf_counter()
    out = embedder.embed(texts)
    return time.perf_counter() - began, out.total_tokens


def limit(
    embedder: Embedder, texts: Sequence[str], rounds: int, until: float = float("inf")
) -> tuple[list[float], int, float]:
    """texts/s of each round over the whole corpus (after a warm-up), tokens, seconds; rounds
    past the second stop at `until` (time.monotonic)."""
    embedder.embed(texts[: min(len(texts), 32)])  # warm-up: first runs allocate and prepack
    rates: list[float] = []
    seconds: list[float] = []
    tokens = 0
    for r in range(rounds):
        if r >= 2 and time.monotonic() > until:
            break
        took, tokens = _timed(embedder, texts)
        rates.append(len(texts) / took)
        seconds.append(took)
    return rates, tokens, median(seconds)


def request_shaped(
    embedder: Embedder,
    texts: Sequence[str],
    batch: int,
    requests: int,
    until: float = float("inf"),
) -> float:
    """texts/s when each call gets the texts of one batched request (as the server sees them);
    requests past the first stop at `until`."""
    done = took = 0.0
    for i in range(requests):
        part = texts[i * batch : (i + 1) * batch]
        if not part or (i and time.monotonic() > until):
            break
        took += _timed(embedder, part)[0]
        done += len(part)
    return done / took if took else 0.0


def single_times(
    embedder: Embedder, texts: Sequence[str], repeats: int = 2, until: float = float("inf")
) -> dict[str, float]:
    """ms per text embedded alone (best of `repeats`), keyed by the text's index; past `until`
    one try per text, and no new text after the eighth."""
    for t in texts[:4]:
        embedder.embed([t])  # warm-up for batch size 1
    out: dict[str, float] = {}
    for i, t in enumerate(texts):
        late = time.monotonic() > until
        if late and i >= 8:
            break
        best = min(_timed(embedder, [t])[0] for _ in range(1 if late else repeats))
        out[str(i)] = best * 1000
    return out


def measure(
    store: ModelStore,
    spec: ModelSpec,
    texts: Sequence[str],
    *,
    threads: int,
    rounds: int,
    batch: int,
    request_slices: int,
    idle_texts: int,
    budget: float = float("inf"),
) -> EngineResult:
    """Everything the report needs from the engine for one model, in about `budget` seconds
    (a busy machine slows everything: then fewer rounds, never fewer than two)."""
    began = time.monotonic()
    embedder = open_embedder(store, spec, threads)
    rates, tokens, seconds = limit(embedder, texts, rounds, began + budget * 0.5)
    mid = median(rates)
    result = EngineResult(
        model=spec.id,
        threads=threads,
        texts_per_s=mid,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        rounds=rates,
        spread=(max(rates) - min(rates)) / mid if mid else 0.0,
        corpus_tokens=tokens,
    )
    if request_slices:
        until = began + budget * 0.7
        result.request_texts_per_s = request_shaped(embedder, texts, batch, request_slices, until)
    idle = texts[:idle_texts]
    if idle:
        result.single_ms = single_times(embedder, idle, until=began + budget * 0.85)
        if threads > 1:
            one = open_embedder(store, spec, 1)
            result.single_ms_1t = single_times(one, idle, until=began + budget)
        else:
            result.single_ms_1t = dict(result.single_ms)
    return result
