"""The limit: the in-process engine on the same model and cores, with no HTTP in between.

The whole corpus at once is the best batching the engine has: it is tokenized once, sorted by
length and its sub-batches planned over all of it. The cores are used in the better of two
ways, both measured: one session with an ORT thread per core, or one session of one thread
per core, each in its own Python thread (ORT releases the GIL) pulling the next sub-batch
from one shared list, as a worker's runners pull from its micro-batcher (dealing each
session a fixed half of the corpus left one idle while the other finished: a 1x2 server
then read 115-123 % of that "limit" on the 64-text shapes corpus). The same engine on
request-sized slices (the texts of one batched request, in their order) and on one text at a
time gives the reference each server load shape is compared with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.backends.choice import Runtime
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.batcher import Engine
from embedder.catalog import ModelSpec
from embedder.encoder import TextEncoder
from embedder.hugepages import weights_on_huge_pages
from embedder.loading import Opener
from embedder.memory import libc_trim
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig, open_session
from embedder.settings import Settings
from embedder.store.files import ModelStore
from embedder.tokens import Tokenized, load_tokenizer
from embedder.tools.bench.stats import median


@dataclass
class EngineResult:
    model: str
    threads: int
    texts_per_s: float  # the limit: whole corpus, the better layout
    tokens_per_s: float
    rounds: list[float]
    spread: float
    corpus_tokens: int
    request_texts_per_s: float = 0.0  # the same engine on request-sized slices, in order
    single_ms: dict[str, float] = field(default_factory=dict)  # text index -> ms, all cores
    single_ms_1t: dict[str, float] = field(default_factory=dict)  # the same on one thread
    layout: str = ""  # the layout the limit came from, e.g. "2x1": 2 sessions of 1 thread
    layouts: dict[str, float] = field(default_factory=dict)  # layout -> median texts/s
    runtime: str = "onnxruntime"  # what computes the engine's runs: "openvino bf16", ...

    @property
    def single_p50(self) -> float:
        return median(list(self.single_ms.values()))


def open_embedder(store: ModelStore, spec: ModelSpec, threads: int) -> TextEncoder:
    """A TextEncoder as a worker builds it (same session options, the weights on huge pages),
    on `threads` ORT threads."""
    assert spec.onnx and spec.tokenizer
    session = open_session(store.path(spec, spec.onnx), SessionConfig(threads=threads))
    weights_on_huge_pages(trim=libc_trim())
    tokenizer = load_tokenizer(store.path(spec, spec.tokenizer), spec.max_tokens)
    return TextEncoder(spec, session, tokenizer, RunLimits())


@dataclass(frozen=True)
class Served:
    """A level opened as the servers open it, on another runtime than ONNX Runtime."""

    encoder: TextEncoder
    runtime: Runtime
    why: str  # auto's reason, as the worker logs it

    @property
    def label(self) -> str:
        return f"{self.runtime.backend} {self.runtime.compute_precision}"


def open_served(
    store: ModelStore, spec: ModelSpec, runners: int, settings: Settings
) -> Served | None:
    """`spec`'s encoder as a worker of `runners` cores opens it under `settings` (the runtime
    `EMBEDDER_BACKEND` chooses, or the kept choice: one compiled model, a stream per runner);
    None where that is ONNX Runtime, which `open_embedder` opens in every layout. The engine
    the servers are compared with must compute as they do: on a CPU with BF16 units `auto`
    serves FP32 levels on OpenVINO."""
    if settings.backend == "onnxruntime":
        return None
    runtimes = Runtimes(BackendPolicy(settings.backend, settings.exact_fp32), store)
    config = SessionConfig(threads=runners, shared_weights=settings.shared_weights)
    limits = RunLimits(max_batch_tokens=settings.max_batch_tokens)
    opener = Opener(store, config, limits, runtimes=runtimes)
    encoder = opener.encoder(spec)
    runtime = opener.runtime(spec)
    if runtime.backend == "onnxruntime":
        return None
    return Served(encoder, runtime, runtimes.why(spec.id) or "")


def lone_engine(
    store: ModelStore, spec: ModelSpec, settings: Settings | None, runners: int
) -> TextEncoder:
    """The engine a lone request is compared with: what one runner of a worker of `runners`
    cores runs it on. On OpenVINO that is the worker's own compiled model (a stream per
    runner: a lone text runs on one), opened with the worker's layout, which the backend
    choice is kept for (another layout may choose another runtime)."""
    served = open_served(store, spec, runners, settings) if settings is not None else None
    return served.encoder if served else open_embedder(store, spec, 1)


def _timed(embedder: TextEncoder, texts: Sequence[str]) -> tuple[float, int]:
    began = time.perf_counter()
    out = embedder.embed(texts)
    return time.perf_counter() - began, out.total_tokens


def _parallel(
    embedders: Sequence[TextEncoder], calls: Sequence[Sequence[str]]
) -> tuple[float, int]:
    """Wall seconds and tokens for `calls`, dealt round-robin to one thread per embedder."""
    if len(embedders) == 1:
        took, tokens = 0.0, 0
        for part in calls:
            seconds, n = _timed(embedders[0], part)
            took, tokens = took + seconds, tokens + n
        return took, tokens
    counts = [0] * len(embedders)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for part in calls[k :: len(embedders)]:
                counts[k] += embedders[k].embed(part).total_tokens
        except BaseException as exc:  # reaches the caller below, never lost with the thread
            errors.append(exc)

    runners = [threading.Thread(target=work, args=(k,)) for k in range(len(embedders))]
    began = time.perf_counter()
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began, sum(counts)


def pull(engines: Sequence[Engine], tok: Tokenized) -> np.ndarray:
    """The rows of `tok` as one planned set: cut into sub-batches balanced for the engines,
    each engine's thread pulling the next one (as a worker's runners pull from its batcher);
    a failed run reaches the caller, never lost with its thread."""
    first = engines[0]
    parts = first.plan(tok.lengths, parallel=len(engines))
    done: list[np.ndarray | None] = [None] * len(parts)
    lock = threading.Lock()
    taken = [0]
    errors: list[BaseException] = []

    def work(engine: Engine) -> None:
        try:
            while True:
                with lock:
                    i = taken[0]
                    taken[0] += 1
                if i >= len(parts):
                    return
                done[i] = engine.run_rows(tok, parts[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = np.zeros((len(tok.lengths), first.dims), dtype=np.float32)
    for rows, got in zip(parts, done, strict=True):
        out[rows] = got
    return out


def _pooled(embedders: Sequence[TextEncoder], texts: Sequence[str]) -> tuple[float, int]:
    """Wall seconds and tokens for `texts` as one planned set (`pull`), tokenized once."""
    began = time.perf_counter()
    tok = embedders[0].tokenize(texts)
    done = embedders[0].finish(tok, pull(embedders, tok))
    return time.perf_counter() - began, done.total_tokens


def round_rate(embedders: Sequence[TextEncoder], texts: Sequence[str]) -> float:
    """texts/s of one round over `texts`, planned and shared among the embedders as `limit`
    does."""
    took, _ = _pooled(embedders, texts)
    return len(texts) / took if took else 0.0


def limit(
    embedders: Sequence[TextEncoder],
    texts: Sequence[str],
    rounds: int,
    until: float = float("inf"),
    warmup: int = 32,
) -> tuple[list[float], int, float]:
    """texts/s of each round over the whole corpus (planned once, its sub-batches pulled by a
    thread per embedder, after a warm-up on `warmup` texts), tokens, seconds; rounds past the
    second stop at `until` (time.monotonic)."""
    for e in embedders:
        e.embed(texts[: min(len(texts), warmup)])  # warm-up: first runs allocate and prepack
    rates: list[float] = []
    seconds: list[float] = []
    tokens = 0
    for r in range(rounds):
        if r >= 2 and time.monotonic() > until:
            break
        took, tokens = _pooled(embedders, texts)
        rates.append(len(texts) / took)
        seconds.append(took)
    return rates, tokens, median(seconds)


def request_shaped(
    embedders: Sequence[TextEncoder],
    texts: Sequence[str],
    batch: int,
    requests: int,
) -> float:
    """texts/s when each call gets the texts of one batched request (as the server sees them),
    the requests shared among the embedders."""
    parts = [texts[i * batch : (i + 1) * batch] for i in range(requests)]
    parts = [p for p in parts if p]
    took, _ = _parallel(embedders, parts)
    return sum(len(p) for p in parts) / took if took else 0.0


def single_times(
    embedder: TextEncoder,
    texts: Sequence[str],
    repeats: int = 5,
    until: float = float("inf"),
    least: int = 8,
) -> dict[str, float]:
    """ms per text embedded alone, keyed by the text's index: the median of `repeats` tries (a
    best-of would flatter the engine by its noise) taken in rounds over the texts, as the load
    generator sends them. The same text back to back runs faster (its shapes and memory
    still warm), which the paired overhead would then charge to the server. Past `until`
    no new round starts, and the first round stops after its `least`-th text."""
    for t in texts[: min(4, least)]:
        embedder.embed([t])  # warm-up for batch size 1
    tries: dict[int, list[float]] = {}
    for r in range(repeats):
        if r and time.monotonic() > until:
            break
        for i, t in enumerate(texts[: len(tries) if r else len(texts)]):
            if not r and i >= least and time.monotonic() > until:
                break
            tries.setdefault(i, []).append(_timed(embedder, [t])[0] * 1000)
    return {str(i): median(v) for i, v in tries.items()}


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
    only: Sequence[str] = (),
    sampled: bool = False,
    settings: Settings | None = None,
) -> EngineResult:
    """Everything the report needs from the engine for one model, in about `budget` seconds
    (a busy machine slows everything: then fewer rounds, never fewer than two). `only` limits
    the layouts measured for the limit (e.g. "2x1", what a worker's runners do). `sampled`
    (big models): a short warm-up, lone texts timed on one thread only (what a runner has),
    3 tries each, at least 3 texts. With the servers' `settings`, a level they compute on
    another runtime than ONNX Runtime is measured on it, in a worker's layout only (its
    runners sharing one compiled model: `open_served`)."""
    began = time.monotonic()
    wide, narrow = f"1x{threads}", f"{threads}x1"
    served = open_served(store, spec, threads, settings) if settings is not None else None
    names = [wide, narrow] if threads > 1 else [wide]
    if served is not None:
        names = [narrow]  # one compiled model with a stream per runner, as a worker has it
    elif only and any(name in names for name in only):
        names = [name for name in names if name in only]
    layouts = {
        name: [served.encoder] * threads
        if served is not None
        else [open_embedder(store, spec, threads)]
        if name == wide
        else [open_embedder(store, spec, 1) for _ in range(threads)]
        for name in names
    }
    measured = {
        name: limit(group, texts, rounds, began + budget * 0.25 * (i + 1), 4 if sampled else 32)
        for i, (name, group) in enumerate(layouts.items())
    }
    best = max(measured, key=lambda name: median(measured[name][0]))
    rates, tokens, seconds = measured[best]
    mid = median(rates)
    result = EngineResult(
        model=spec.id,
        threads=threads,
        texts_per_s=mid,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        rounds=rates,
        spread=(max(rates) - min(rates)) / mid if mid else 0.0,
        corpus_tokens=tokens,
        layout=best,
        layouts={name: median(m[0]) for name, m in measured.items()},
        runtime=served.label if served is not None else "onnxruntime",
    )
    if request_slices:
        result.request_texts_per_s = max(
            request_shaped(group, texts, batch, request_slices) for group in layouts.values()
        )
    idle = texts[:idle_texts]
    if idle and served is not None:
        # a lone text runs on one stream of the worker's compiled model, as on one runner's
        times = single_times(served.encoder, idle, 3 if sampled else 5, began + budget, least=3)
        result.single_ms_1t = result.single_ms = times
    elif idle and sampled:
        group = layouts.get(f"{threads}x1")
        one = group[0] if group else open_embedder(store, spec, 1)
        result.single_ms_1t = single_times(one, idle, 3, began + budget, least=3)
    elif idle:
        # One thread first (what a runner has: the lone-request comparison reads it), so a
        # tight budget cuts the all-core figure short rather than the paired one.
        embedder = layouts[wide][0] if wide in layouts else open_embedder(store, spec, threads)
        if threads > 1:
            group = layouts.get(f"{threads}x1")
            one = group[0] if group else open_embedder(store, spec, 1)
            result.single_ms_1t = single_times(one, idle, until=began + budget * 0.85)
        result.single_ms = single_times(embedder, idle, until=began + budget)
        if threads == 1:
            result.single_ms_1t = dict(result.single_ms)
    return result
