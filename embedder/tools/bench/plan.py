"""What one benchmark run measures, and for how long: the full run and `--quick`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from embedder.settings import Settings, default_models_root


@dataclass(frozen=True)
class Shape:
    """One load shape: texts per request and concurrent connections."""

    batch: int
    concurrency: int

    @property
    def kind(self) -> str:
        return "single" if self.batch == 1 else "batch"

    @property
    def name(self) -> str:
        return f"{self.batch} text{'s' if self.batch > 1 else ''} x c{self.concurrency}"


@dataclass(frozen=True)
class Timing:
    """How long one load run may last and when it has measured enough.

    Each run gets a share of the time left (by `weight`), kept within [floor, max_seconds].
    """

    warmup: float
    min_seconds: float
    max_seconds: float
    rounds: int
    per_round: int  # answers per round, at least (single-text shapes)
    max_requests: int
    weight: float = 1.0
    floor: float = 1.0


@dataclass(frozen=True)
class Options:
    quick: bool
    models_root: Path
    out_dir: Path
    levels: tuple[int, ...]  # quality levels of the starter catalog (and BGE, when present)
    bge: bool  # also the BGE levels whose files are already in the models root
    corpus_size: int
    seed: int
    batch: int  # texts per batched request
    limit_rounds: int
    request_slices: int  # request-sized engine runs (batch texts each)
    idle_texts: int  # texts for the single-text compute time and the idle latency
    layouts: tuple[tuple[int, int], ...]  # (workers, ORT threads per worker)
    transports: tuple[str, ...]  # tcp, unix: REST /v1/embeddings over TCP or rest.sock
    # Batched shapes run over the first transport only, but for these levels over all of them:
    # a batched request computes for seconds, next to which the transport costs nothing.
    batch_all_transports: tuple[int, ...]
    batched: tuple[int, ...]  # concurrencies
    single: tuple[int, ...]
    batch_timing: Timing
    single_timing: Timing
    idle_timing: Timing
    engine_seconds: float  # about, per level (fewer rounds on a busy machine, at least two)
    peer: bool
    peer_rounds: int
    peer_seconds: float  # about, once the model is loaded (at least two rounds)
    budget_s: float  # the run stops starting new work past this (it must end under 10 min)
    server_env: tuple[tuple[str, str], ...] = ()  # extra settings for the servers (tuning)
    # "starter" (and the BGE levels on disk) or "shapes": BGE's levels on shape-true stand-ins
    # with random weights, their reranker, and the torch peer on the same weights.
    catalog: str = "starter"
    limit_layouts: tuple[str, ...] = ()  # the engine's layouts (e.g. "2x1"); () = 1xN and Nx1
    rerank_calls: tuple[tuple[int, int], ...] = ()  # (docs per RAG call, idle calls) each
    rerank_load: tuple[int, int] = (20, 4)  # (docs per call, concurrency) under load
    # the torch peer's child process may take this long (0: from peer_seconds); it guards
    # against a stuck child only: a 278M-parameter model on a busy machine needs many minutes
    peer_timeout: float = 0.0
    rerank_timing: Timing = Timing(0.0, 0.0, 40.0, 2, 1, 40, weight=6.0, floor=5.0)
    # Also for the lone shape (1 text at c1): JSON-RPC embed on rpc.sock, whose path to the
    # engine differs from REST's (dispatch, compact vectors), so its overhead is reported too.
    lone_transports: tuple[str, ...] = ("rpc",)
    # The starter catalog's peers on all-MiniLM-L6-v2 (see peers.PEERS), in alternate rounds
    # with our levels of that model; the shapes catalog's torch peer runs FP32 and bf16.
    peers: tuple[str, ...] = ("st-fp32", "st-bf16", "fastembed")
    # Service CPU per lone text (lone_cpu), per level on the default layout's server: rounds
    # (at most `rounds`, at least two, within the slot) of the idle texts sent one by one,
    # each right after the engine embedded it here.
    lone_cpu_timing: Timing = Timing(0.0, 0.0, 10.0, 8, 0, 0, weight=1.5, floor=3.0)

    def lone_cpu_transports(self) -> tuple[str, ...]:
        """The REST transports the lone figures are taken on, one after the other (two on
        one server in the same rounds would each count the other's CPU)."""
        return tuple(t for t in self.transports if t in ("tcp", "unix"))

    def shapes(self) -> list[Shape]:
        return [Shape(self.batch, c) for c in self.batched] + [Shape(1, c) for c in self.single]

    def runs(self, level: int) -> list[tuple[Shape, str]]:
        """(shape, transport) pairs for one level on one server, transports side by side."""
        out: list[tuple[Shape, str]] = []
        for shape in self.shapes():
            every = shape.batch == 1 or level in self.batch_all_transports
            out += [(shape, t) for t in (self.transports if every else self.transports[:1])]
            if shape.batch == 1 and shape.concurrency == 1:
                out += [(shape, t) for t in self.lone_transports if t not in self.transports]
        return out

    def timing(self, shape: Shape) -> Timing:
        if shape.batch > 1:
            return self.batch_timing
        return self.idle_timing if shape.concurrency == 1 else self.single_timing


FULL = Options(
    quick=False,
    models_root=Path(),
    out_dir=Path("artifacts/bench"),
    levels=(1, 2, 3, 4),
    bge=True,
    corpus_size=512,
    seed=2024,
    batch=32,
    limit_rounds=3,
    request_slices=16,
    idle_texts=32,
    layouts=((2, 1), (1, 2)),
    transports=("tcp", "unix"),
    batch_all_transports=(1,),
    batched=(1, 2, 4),
    single=(1, 4, 16),
    batch_timing=Timing(0.0, 0.0, 25.0, 3, 1, 400, weight=5.0, floor=4.0),
    single_timing=Timing(0.5, 1.5, 4.0, 5, 20, 20_000, weight=1.0, floor=2.0),
    idle_timing=Timing(0.3, 1.5, 5.0, 5, 20, 20_000, weight=1.2, floor=2.0),
    engine_seconds=30.0,
    peer=True,
    peer_rounds=3,
    peer_seconds=30.0,
    # make bench's pip steps and start-ups take about a minute: the whole stays under 10
    budget_s=530.0,
)

QUICK = replace(
    FULL,
    quick=True,
    levels=(1,),
    bge=False,
    corpus_size=32,
    batch=8,
    limit_rounds=2,
    request_slices=1,
    idle_texts=8,
    layouts=((2, 1),),
    batched=(2,),
    single=(1, 4),
    batch_all_transports=(1,),
    batch_timing=Timing(0.0, 0.0, 1.0, 2, 1, 40, floor=0.5),
    single_timing=Timing(0.05, 0.2, 1.0, 2, 2, 400, floor=0.5),
    idle_timing=Timing(0.05, 0.2, 1.0, 2, 4, 400, floor=0.5),
    engine_seconds=5.0,
    lone_cpu_timing=Timing(0.0, 0.0, 1.0, 2, 0, 0, weight=0.5, floor=0.5),
    peer=False,
    peer_rounds=1,
    peer_seconds=10.0,
    budget_s=120.0,
)


# The shapes catalog: 110M- and 278M-parameter graphs on 2 cores compute ~20x slower than
# MiniLM, so every figure is sampled (a 64-text corpus, fewer rounds, the default layout over
# TCP only); ratios come from the same minutes. With the peers in two precisions, the runtimes
# side by side and the lone texts' CPU, that still takes a 2-core machine about 15 minutes: the
# budget lets it, where the starter run's would leave every server cell out.
SHAPES = replace(
    FULL,
    catalog="shapes",
    bge=False,
    corpus_size=64,
    limit_rounds=2,
    request_slices=2,
    idle_texts=8,
    layouts=((1, 2),),
    transports=("tcp",),
    batched=(2,),
    single=(1, 16),
    limit_layouts=("2x1",),
    batch_timing=Timing(0.0, 0.0, 30.0, 2, 1, 40, weight=4.0, floor=4.0),
    single_timing=Timing(0.5, 1.5, 12.0, 3, 8, 2_000, weight=1.5, floor=3.0),
    idle_timing=Timing(0.3, 1.5, 10.0, 3, 4, 2_000, weight=1.2, floor=3.0),
    engine_seconds=25.0,
    lone_cpu_timing=Timing(0.0, 0.0, 20.0, 6, 0, 0, weight=2.0, floor=5.0),
    peer_rounds=2,
    peer_seconds=20.0,
    peer_timeout=1800.0,
    rerank_calls=((20, 3), (100, 1)),
    # A 100-doc call on a busy 2-core machine computes for over a minute: admit it (the
    # default 10 s of queued work would shed it with 503, and 60 s would cut it off).
    server_env=(("EMBEDDER_MAX_QUEUE_WAIT", "300"),),
    budget_s=1200.0,
)


def default_out_dir() -> Path:
    """artifacts/bench in this repository (an editable install), else in the current directory."""
    repo = Path(__file__).resolve().parents[3]
    return repo / "artifacts" / "bench" if (repo / "pyproject.toml").is_file() else FULL.out_dir


def _ints(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        msg = f"{raw!r} is not a comma-separated list of integers"
        raise argparse.ArgumentTypeError(msg) from None


def _layouts(raw: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for part in raw.split(","):
        w, _, t = part.strip().partition("x")
        if not (w.isdigit() and t.isdigit() and int(w) > 0 and int(t) > 0):
            raise argparse.ArgumentTypeError(f"layout {part!r} is not WORKERSxTHREADS, e.g. 2x1")
        out.append((int(w), int(t)))
    return tuple(out)


def parse(argv: Sequence[str]) -> Options:
    ap = argparse.ArgumentParser(
        prog="embedder bench",
        description="Throughput and latency of the engine, the live server and "
        "sentence-transformers on this machine; writes artifacts/bench/latest.{json,md}.",
    )
    ap.add_argument("--quick", action="store_true", help="a few seconds: one level, one layout")
    ap.add_argument(
        "--models-root",
        type=Path,
        help="models directory (default: $EMBEDDER_MODELS_ROOT or the service's default)",
    )
    ap.add_argument("--out", type=Path, help="output directory (default: artifacts/bench)")
    ap.add_argument("--levels", type=_ints, help="quality levels, e.g. 2,4 (default: all)")
    ap.add_argument("--layouts", type=_layouts, help="WORKERSxTHREADS list, e.g. 2x1,1x2")
    ap.add_argument("--transports", help="tcp,unix (default: both)")
    ap.add_argument("--no-peer", action="store_true", help="skip the peers")
    ap.add_argument(
        "--peers",
        help="starter catalog: which peers, of st-fp32,st-bf16,fastembed (default: all)",
    )
    ap.add_argument("--no-bge", action="store_true", help="starter levels only")
    ap.add_argument(
        "--rerank-calls",
        help="shapes: RAG calls at idle as DOCS:CALLS,... (default 20:3,100:1)",
    )
    ap.add_argument(
        "--catalog",
        choices=("starter", "shapes"),
        help="starter (default; plus the BGE levels on disk) or shapes: BGE-shaped stand-ins "
        "with random weights and the torch peer on the same weights "
        "(default: shapes when EMBEDDER_CATALOG=shapes)",
    )
    ap.add_argument("--corpus", type=int, help="texts in the corpus")
    ap.add_argument("--seed", type=int, help="corpus seed")
    ap.add_argument("--budget", type=float, help="seconds after which no new work starts")
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the servers, e.g. EMBEDDER_MAX_BATCH_TOKENS=1024 (repeatable)",
    )
    a = ap.parse_args(list(argv))
    catalog = a.catalog or ("shapes" if os.environ.get("EMBEDDER_CATALOG") == "shapes" else "")
    opts = QUICK if a.quick else SHAPES if catalog == "shapes" else FULL
    if a.quick and catalog == "shapes":
        ap.error("--quick runs the starter catalog only")
    transports = tuple(t.strip() for t in (a.transports or "").split(",") if t.strip())
    if any(t not in ("tcp", "unix") for t in transports):
        ap.error("--transports takes tcp and/or unix")
    peers = tuple(p.strip() for p in (a.peers or "").split(",") if p.strip())
    if any(p not in FULL.peers for p in peers):
        ap.error(f"--peers takes some of {','.join(FULL.peers)}")
    root = a.models_root or default_models_root(os.environ)
    env = [tuple(e.split("=", 1)) for e in a.server_env]
    if any(len(e) != 2 or not e[0].startswith("EMBEDDER_") for e in env):
        ap.error("--server-env takes EMBEDDER_NAME=VALUE")
    calls = opts.rerank_calls
    if a.rerank_calls:
        try:
            calls = tuple(
                (int(n), int(c))
                for n, _, c in (p.partition(":") for p in a.rerank_calls.split(","))
            )
        except ValueError:
            ap.error("--rerank-calls takes DOCS:CALLS,..., e.g. 20:3,100:1")
    return replace(
        opts,
        rerank_calls=calls,
        models_root=root.expanduser(),
        out_dir=a.out or default_out_dir(),
        levels=a.levels or opts.levels,
        layouts=a.layouts or opts.layouts,
        transports=transports or opts.transports,
        peer=(opts.peer or bool(peers)) and not a.no_peer,
        peers=peers or opts.peers,
        bge=opts.bge and not a.no_bge,
        corpus_size=max(8, a.corpus or opts.corpus_size),
        seed=opts.seed if a.seed is None else a.seed,
        budget_s=a.budget or opts.budget_s,
        server_env=tuple((dict(opts.server_env) | {k: v for k, v in env}).items()),
    )


def served_settings(opts: Options) -> Settings:
    """The settings the bench's servers read: this environment and `--server-env`."""
    return Settings.from_env({**os.environ, **dict(opts.server_env)})
