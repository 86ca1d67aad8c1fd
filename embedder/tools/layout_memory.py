"""Memory per worker for worker layouts: what each worker holds after loading a catalog, and
after one round of work on every runner (the runners of a model share one session).

The design promise is one copy of each model per worker whatever its core count; this puts a
number on it for the layouts a deployment would use (1x2, 2x1, 4x4, 1x16 here on 2 cores: the
memory of a layout does not depend on how many cores run it). Each layout is a real gunicorn of
this checkout, offline, started and stopped in turn; per worker it reads RSS, and USS/PSS
(what is the worker's own, and its share of pages mapped by several: weights shared across
workers show there, not in RSS).

    python -m embedder.tools.layout_memory --catalog shapes --layouts 1x2,2x1,4x4,1x16 \\
        --out artifacts/layout-memory.json

Prints a Markdown table; writes every reading as JSON. Refuses to start a layout when the
machine has less memory available than `--reserve` plus an estimate of what it will take.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from embedder.catalog import ModelSpec
from embedder.catalog_file import load_catalog
from embedder.settings import default_models_root
from embedder.store.files import ModelStore
from embedder.tools import launch
from embedder.tools.corpus import corpus
from embedder.tools.soak_load import IDLE_SETTLE, SHED_TRIES, Kind, call, kinds, long_texts, rpc

MIB = 1024 * 1024


def files_served(root: Path, catalog: str, models: tuple[str, ...]) -> int:
    """Bytes of the model files a worker serves (every file of every model it loads, as found
    under the models root)."""
    cat = load_catalog(catalog)
    specs: list[ModelSpec] = [cat.get(m) for m in models] if models else list(cat)
    store = ModelStore(root, cat)
    total = 0
    for spec in specs:
        for f in spec.files:
            path = store.path(spec, f.name)
            if path.is_file():
                total += path.stat().st_size
    return total


def worker_memory(pids: list[int]) -> list[dict[str, float]]:
    """RSS, USS and PSS in MiB of each worker (read from /proc, not asked of the service)."""
    out = []
    for pid in pids:
        try:
            full = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        out.append(
            {
                "pid": pid,
                "rss_mib": round(full.rss / MIB, 1),
                "uss_mib": round(full.uss / MIB, 1),
                "pss_mib": round(full.pss / MIB, 1),
            }
        )
    return out


def one_round(
    service: launch.Gunicorn, rotation: list[Kind], texts: list[str], n: int
) -> list[str]:
    """`n` concurrent requests of `texts` per model (enough for every runner of every worker
    to run one); what went wrong, if anything. A request shed as overloaded is sent again
    after the wait it names, up to SHED_TRIES times, as the soak does."""
    errors: list[str] = []
    lock = threading.Lock()

    def send(kind: Kind) -> None:
        for _ in range(SHED_TRIES):
            outcome = call(service, kind, texts, texts[0][:200], 3600.0)
            if outcome.retry_after is None:
                break
            time.sleep(min(outcome.retry_after, 10.0))
        if outcome.error is not None:
            with lock:
                errors.append(f"{kind.label}: {outcome.error}")

    for kind in rotation:
        if kind.api != "rest":
            continue
        threads = [threading.Thread(target=send, args=(kind,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors


def measure(args: argparse.Namespace, workers: int, threads: int) -> dict[str, Any]:
    """Start the layout, read memory after load and (with --run-batch) after one round."""
    models = tuple(m for m in args.models.split(",") if m)
    env = dict(e.split("=", 1) for e in args.env)
    with tempfile.TemporaryDirectory(prefix="layout-") as tmp:
        service = launch.start(
            Path(tmp),
            Path(args.models_root),
            catalog=args.catalog,
            workers=workers,
            threads=threads,
            tcp=False,
            models=models,
            extra_env=env,
        )
        try:
            began = time.monotonic()
            service.wait_ready(timeout=args.ready_timeout)
            load_s = time.monotonic() - began
            time.sleep(IDLE_SETTLE)  # the service's idle trim after start-up allocations
            pids = service.worker_pids()
            loaded = worker_memory(pids)
            row: dict[str, Any] = {
                "layout": f"{workers}x{threads}",
                "env": env,
                "load_s": round(load_s, 1),
                "after_load": loaded,
            }
            if args.run_batch:
                rotation = kinds(rpc(service.sock("rpc.sock"), "models.describe"))
                pool = long_texts(corpus(400, seed=1), args.run_words, args.run_batch, seed=1)
                row["run_errors"] = one_round(service, rotation, pool, workers * threads)
                time.sleep(IDLE_SETTLE)
                row["after_run"] = worker_memory(pids)
            return row
        finally:
            service.stop()


def available_mib() -> float:
    return float(psutil.virtual_memory().available) / MIB


def table(rows: list[dict[str, Any]], files_mib: float) -> str:
    """A Markdown table: per layout, the median worker's memory."""
    head = (
        "| layout | RSS/worker after load, MiB | x files | USS / PSS | after a round, "
        "MiB | x files |\n|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['layout']} | {r['skipped']} | | | | |")
            continue
        rss = statistics.median(w["rss_mib"] for w in r["after_load"])
        uss = statistics.median(w["uss_mib"] for w in r["after_load"])
        pss = statistics.median(w["pss_mib"] for w in r["after_load"])
        after = ""
        ratio = ""
        if r.get("after_run"):
            a = statistics.median(w["rss_mib"] for w in r["after_run"])
            after, ratio = f"{a:.0f}", f"{a / files_mib:.2f}"
        lines.append(
            f"| {r['layout']} | {rss:.0f} | {rss / files_mib:.2f} | "
            f"{uss:.0f} / {pss:.0f} | {after} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m embedder.tools.layout_memory", description=__doc__)
    p.add_argument("--catalog", default="shapes")
    p.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    p.add_argument("--models-root", default=str(default_models_root(os.environ)))
    p.add_argument("--layouts", default="1x2,2x1", help="WORKERSxRUNNERS, comma-separated")
    p.add_argument("--env", action="append", default=[], metavar="EMBEDDER_NAME=VALUE")
    p.add_argument(
        "--run-batch", type=int, default=0, help="after load, one round of this many texts"
    )
    p.add_argument("--run-words", type=int, default=200, help="words per text in the round")
    p.add_argument(
        "--estimate-mib",
        type=float,
        default=0.0,
        help="memory one copy of the models takes (default: the files' size)",
    )
    p.add_argument("--reserve", type=float, default=4096, help="MiB to leave available")
    p.add_argument(
        "--wait-memory",
        type=float,
        default=600.0,
        help="seconds to wait for the memory a layout needs before skipping it",
    )
    p.add_argument("--ready-timeout", type=float, default=900.0)
    p.add_argument("--out", default="artifacts/layout-memory.json")
    args = p.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    files_mib = files_served(Path(args.models_root), args.catalog, models) / MIB
    copy = args.estimate_mib or files_mib
    rows: list[dict[str, Any]] = []
    for layout in args.layouts.split(","):
        workers, threads = (int(x) for x in layout.split("x"))
        need = workers * copy
        waited = time.monotonic() + args.wait_memory
        while need + args.reserve > available_mib() and time.monotonic() < waited:
            time.sleep(5)  # a machine shared with others: their peaks pass
        if need + args.reserve > available_mib():
            rows.append(
                {
                    "layout": layout,
                    "skipped": f"needs ~{need:.0f} MiB, {available_mib():.0f} available",
                }
            )
        else:
            rows.append(measure(args, workers, threads))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"files_mib": files_mib, "rows": rows}, indent=1))
    print(f"files served per worker: {files_mib:.0f} MiB")
    print(table(rows, files_mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
