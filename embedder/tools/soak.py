"""A soak run: a real gunicorn under long mixed load, watching each worker's RSS.

The daemon runs for months, and the last serious bug was an OOM after weeks of slow RSS growth,
so this starts the service (starter catalog, offline) on its own sockets and sends bounded,
self-stopping load from this process over the unix sockets: random batch sizes and corpus
texts of random lengths, rotating over every loaded level (JSON-RPC `embed` by quality and REST
by model id) and rerank (both APIs). A request the service sheds as overloaded (503 +
Retry-After, JSON-RPC -32005: the queue bound working as designed when two large batches for
one slow model meet on a busy machine) is sent again after the wait it names, at most 3 times,
and counted; a request fails if it gets any other answer, or is still shed on its last try.

RSS is read with `mem_info` in two ways. Under load (twice a second) it mostly measures the
activations of whatever batches run at that instant, swinging by hundreds of MiB. So at regular
checkpoints the load is drained and, once the workers have handed freed memory back (their
RSS has stopped falling: `soak_load.idle_sample`), each worker's idle RSS is read: what a
worker keeps between requests, which is what grows when memory leaks or fragments. The
verdict compares each worker's median idle RSS in the first and last quarter of the run after
warm-up (allocators and caches settle during warm-up), and counts failed requests.

    python -m embedder.tools.soak --requests 50000 --seconds 7200 --out artifacts/soak

At the largest shapes of the `shapes` catalog (bge-base Q4 32 x 512 tokens, rerank 100 docs of
512 tokens), one worker with 2 runners, service settings passed through:

    python -m embedder.tools.soak --catalog shapes --workers 1 --threads 2 --clients 2 \
        --max-batch 32 --max-docs 100 --full --tokens 512 --timeout 2000 \
        --env EMBEDDER_MAX_QUEUE_WAIT=300 --env EMBEDDER_SHARED_WEIGHTS=1 --seconds 3600

The load itself (requests, tally, RSS sampling and checkpoints) is in `embedder.tools.soak_load`.

Writes `soak.json`, the service's `gunicorn.log` and, when matplotlib is installed
(`pip install -e '.[soak]'`), `soak-rss.png`; prints the RSS curve. Exits 1 if a request
failed or a worker's RSS grew more than allowed. Runs from a source checkout (gunicorn
loads `wsgi.py` and `gunicorn.conf.py` from it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from embedder.settings import default_models_root
from embedder.tools import launch
from embedder.tools.corpus import corpus
from embedder.tools.soak_load import (
    Service,
    Shapes,
    Tally,
    client,
    idle_sample,
    kinds,
    long_texts,
    rpc,
    sampler,
    settler,
)
from embedder.tools.soak_report import curve, plot, rss_growth


def start(
    workdir: Path,
    models_root: Path,
    workers: int,
    threads: int = 1,
    catalog: str = "starter",
    models: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Service:
    """gunicorn on `catalog` with its sockets under `workdir`, no TCP, offline."""
    return launch.start(
        workdir,
        models_root,
        catalog=catalog,
        workers=workers,
        threads=threads,
        tcp=False,
        models=models,
        extra_env=env,
    )


def service_env(pairs: list[str]) -> dict[str, str]:
    """`--env NAME=VALUE` options as a mapping (only EMBEDDER_* settings: the soak starts the
    service; it is not a way to change how it is started)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("EMBEDDER_"):
            raise SystemExit(f"--env wants EMBEDDER_NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    env = service_env(args.env)
    models = tuple(m for m in args.models.split(",") if m)
    service = start(
        workdir, Path(args.models_root), args.workers, args.threads, args.catalog, models, env
    )
    shapes = Shapes(
        args.max_batch, args.max_docs or args.max_batch, args.full, args.timeout, args.retry_wait
    )
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        service.wait_ready(timeout=300.0)
        rotation = kinds(rpc(service.sock("rpc.sock"), "models.describe"))
        pool = corpus(3000, seed=args.seed)
        if args.tokens:
            pool = long_texts(pool, args.tokens, max(300, 2 * args.max_docs), seed=args.seed)
        t0 = time.monotonic()
        tally = Tally(planned=args.requests, deadline=t0 + args.seconds)
        every = args.settle_every or max(5.0, args.seconds / 40)
        warm = args.seconds * args.warmup
        threads = [
            threading.Thread(target=sampler, args=(service, stop, t0, args.sample_every, samples)),
            threading.Thread(target=settler, args=(service, tally, stop, t0, every, warm, samples)),
        ]
        clients = [
            threading.Thread(
                target=client,
                args=(service, tally, rotation, pool, args.seed * 1000 + i, shapes),
            )
            for i in range(args.clients)
        ]
        for t in threads + clients:
            t.start()
        for t in clients:
            t.join()
        duration = time.monotonic() - t0
        idle_sample(service, t0, samples)  # drained: the last idle reading
    finally:
        stop.set()
        for t in threads:
            t.join()
        code = service.stop()
        # The service's own log (start-up, worker exits, the stop) outlives the temporary
        # sockets directory: an exit code alone does not say why.
        shutil.copyfile(service.log, Path(args.out) / "gunicorn.log")
        shutil.rmtree(workdir, ignore_errors=True)
    pids_seen = sorted({s["pid"] for s in samples if s["pid"] != "master"})
    idle = [s for s in samples if s["idle"]]
    # Warm-up ends where its checkpoint was due: a fraction of the time allowed, or of the run
    # if it ran out of requests first.
    warm_end = args.warmup * min(args.seconds, duration)
    return {
        "requests_planned": args.requests,
        "seconds_limit": args.seconds,
        "requests_done": tally.sent,
        "failed": tally.failed,
        "shed_and_retried": tally.shed,
        "duration_s": round(duration, 1),
        "requests_per_s": round(tally.sent / duration, 2) if duration else 0.0,
        "workers": args.workers,
        "threads": args.threads,
        "clients": args.clients,
        "catalog": args.catalog,
        "models": list(models),
        "service_env": env,
        "max_batch": shapes.max_batch,
        "max_docs": shapes.max_docs,
        "full_shapes": shapes.full,
        "text_words_min": args.tokens,
        "client_timeout_s": shapes.timeout,
        "retry_wait_s": shapes.retry_wait,
        "warmup_fraction": args.warmup,
        "warmup_s": round(warm_end, 1),
        "checkpoint_every_s": every,
        "rotation": [k.label for k in rotation],
        "by_kind": {
            k: {
                "requests": tally.by_kind[k],
                "p50_s": round(statistics.median(v), 3),
                "max_s": round(max(v), 3),
            }
            for k, v in sorted(tally.latencies.items())
        },
        "errors": tally.errors,
        "worker_pids_seen": pids_seen,
        "worker_restarts": max(0, len(pids_seen) - args.workers),
        "rss": rss_growth(idle, duration, warm_end),
        "rss_under_load": rss_growth([s for s in samples if not s["idle"]], duration, warm_end),
        "max_growth_percent": args.max_growth,
        "gunicorn_exit": code,
        "samples": samples,
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run, if anything."""
    problems = []
    if report["failed"]:
        problems.append(f"{report['failed']} requests failed")
    if report["worker_restarts"]:
        problems.append(f"{report['worker_restarts']} worker restarts")
    for pid, r in report["rss"].items():
        if "growth_percent" not in r:
            problems.append(f"worker {pid}: {r['note']}")
        elif r["growth_percent"] > report["max_growth_percent"]:
            problems.append(f"worker {pid}: RSS grew {r['growth_percent']}%")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m embedder.tools.soak",
        description="A real gunicorn under long mixed load, watching each worker's RSS.",
    )
    p.add_argument("--requests", type=int, default=50_000, help="stop after this many requests")
    p.add_argument("--seconds", type=float, default=7200, help="...or after this many seconds")
    p.add_argument("--out", default="artifacts/soak", help="directory for the JSON and PNG")
    p.add_argument(
        "--models-root",
        default=str(default_models_root(os.environ)),
        help="models root (the starter files are built there if missing)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=1, help="cores per worker: micro-batch runners (default 1)"
    )
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    p.add_argument("--catalog", default="starter", help="catalog to serve (default starter)")
    p.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    p.add_argument("--max-batch", type=int, default=64, help="texts per embed request: 1..this")
    p.add_argument(
        "--max-docs", type=int, default=0, help="docs per rerank request: 1..this (--max-batch)"
    )
    p.add_argument(
        "--full", action="store_true", help="every request at its maximum, not 1..maximum"
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=0,
        help="every text at least this many words (>= tokens), joined from the corpus; "
        "0: the corpus mix of short, medium and long texts",
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, help="client timeout per request, seconds"
    )
    p.add_argument(
        "--retry-wait",
        type=float,
        default=10.0,
        help="longest wait, seconds, for a shed request's Retry-After before it is sent again",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="EMBEDDER_NAME=VALUE",
        help="a service setting (repeatable), e.g. EMBEDDER_SHARED_WEIGHTS=1",
    )
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of the run before RSS")
    p.add_argument("--sample-every", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument(
        "--settle-every",
        type=float,
        default=0.0,
        help="seconds of load between idle checkpoints (default: --seconds / 40, at least 5)",
    )
    p.add_argument("--max-growth", type=float, default=5.0, help="allowed RSS growth, percent")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    report = run(args)
    out = Path(args.out)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    print(curve(report["samples"]))
    print(plot(report["samples"], report, out / "soak-rss.png"))
    summary = {k: v for k, v in report.items() if k not in ("samples", "rotation", "by_kind")}
    print(json.dumps(summary, indent=1))
    problems = verdict(report)
    print("soak: " + ("; ".join(problems) if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
