"""Service CPU per lone text: what a worker burns on the CPU for one text sent alone, over what
the engine burns for the same text in this process.

The latency a lone request pays over the engine moves by milliseconds between runs on a shared
machine; CPU time hardly does (cold caches still cost more under load). So, text by text, the
two back to back (load that drifts hits both): the engine embeds the text alone on a
single-thread session (what a runner has), this process's CPU time read around each step; the
server gets it as a lone REST request on one keep-alive connection from this process (a
different process than the worker: the client's CPU is not counted). The workers' CPU time
is read from /proc before and after each round of texts, thread by thread (`schedstat`). Summed
over every worker, so whichever serves is counted and the gunicorn master is not.

`python -m embedder.tools.bench.lone_cpu` starts a server of each checkout given for one level
and prints the figure, the checkouts' servers text by text in the same rounds (`main`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.encoder import TextEncoder
from embedder.tools.bench import schedstat
from embedder.tools.bench.stats import median
from embedder.tools.bench.wire import Connection, connect, post_json


@dataclass
class Target:
    """A live server: where to send the requests and which processes serve them."""

    name: str
    address: str  # tcp:127.0.0.1:PORT or unix:/path/rest.sock
    workers: Callable[[], list[int]]
    conn: Connection | None = None

    def post(self, body: bytes) -> int:
        if self.conn is None:
            self.conn = connect(self.address, 120.0)
        try:
            return post_json(self.conn, body)[0]
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.conn.close()  # an idle keep-alive connection closed by the server: once more
            return post_json(self.conn, body)[0]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def engine_text(encoder: TextEncoder, text: str) -> tuple[int, int]:
    """(all steps, the session's run alone) in ns of this process's CPU, for `text` embedded
    alone by the steps a served text takes (tokenize, run, finish). The process's, not the
    thread's: the tokenizer encodes on its own pool of native threads (as in the worker,
    where they are counted); nothing else here runs meanwhile."""
    t0 = time.process_time_ns()
    tok = encoder.tokenize([text])
    (rows,) = encoder.plan(tok.lengths)
    t1 = time.process_time_ns()
    pooled = encoder.run_rows(tok, rows)
    t2 = time.process_time_ns()
    encoder.finish(tok, pooled)
    return time.process_time_ns() - t0, t2 - t1


@dataclass
class Round:
    """One round over the texts: each target's workers' CPU (ns by thread role), the engine's
    (all steps, run alone), the engine's wall time per text (ms) and each target's round trip
    per text over the engine's wall time for that text (ms)."""

    cpu: dict[str, dict[str, int]]
    engine: tuple[int, int]
    engine_walls: list[float]
    over: dict[str, list[float]]


def one_round(
    encoder: TextEncoder,
    targets: Sequence[Target],
    model: str,
    texts: Sequence[str],
    r: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> Round:
    """`texts` text by text: the engine and each server on the same text back to back (load
    that drifts within a round hits all of them), the servers' order flipped every text (each
    follows the engine as often as the other server); wall times read from `clock` (ns)."""
    bodies = [
        json.dumps({"model": model, "input": t, "encoding_format": "base64"}).encode()
        for t in texts
    ]
    before = {t.name: schedstat.threads(t.workers()) for t in targets}
    total = run = 0
    engine_walls: list[float] = []
    over: dict[str, list[float]] = {t.name: [] for t in targets}
    for i, (text, body) in enumerate(zip(texts, bodies, strict=True)):
        w0 = clock()
        took, ran = engine_text(encoder, text)
        engine_wall = (clock() - w0) / 1e6
        engine_walls.append(engine_wall)
        total, run = total + took, run + ran
        for target in targets if (r + i) % 2 == 0 else reversed(targets):
            w0 = clock()
            if (status := target.post(body)) != 200:
                raise RuntimeError(f"{target.name}: HTTP {status} for a lone text")
            over[target.name].append((clock() - w0) / 1e6 - engine_wall)
    used = {t.name: schedstat.used(before[t.name], schedstat.threads(t.workers())) for t in targets}
    return Round(used, (total, run), engine_walls, over)


def per_round(
    cpu: dict[str, int], engine: tuple[int, int], n: int, over: list[float], wall: list[float]
) -> dict[str, Any]:
    """One round's figures in ms per text: the worker's CPU, the engine's and the difference;
    the median text's latency over the engine's (`over`: text by text) and the engine's own
    wall time (`wall`)."""
    server = sum(cpu.values()) / n / 1e6
    eng, run = engine[0] / n / 1e6, engine[1] / n / 1e6
    threads = {k: v / n / 1e6 for k, v in cpu.items()}
    return {
        "server_ms": server,
        "engine_ms": eng,
        "engine_run_ms": run,
        "over_ms": server - eng,
        "threads_ms": threads,
        "latency_over_ms": median(over),
        "engine_wall_ms": median(wall),
    }


def summary(rounds: list[dict[str, Any]], texts: int) -> dict[str, Any]:
    """Medians over the rounds, and the spread of the figure that matters (over the engine)."""
    over = [r["over_ms"] for r in rounds]
    roles = {k for r in rounds for k in r["threads_ms"]}
    return {
        "texts": texts,
        "requests": texts * len(rounds),
        "over_ms": median(over),
        "over_min_ms": min(over, default=0.0),
        "over_max_ms": max(over, default=0.0),
        "server_ms": median([r["server_ms"] for r in rounds]),
        "engine_ms": median([r["engine_ms"] for r in rounds]),
        "engine_run_ms": median([r["engine_run_ms"] for r in rounds]),
        "latency_over_ms": median([r["latency_over_ms"] for r in rounds]),
        "engine_wall_ms": median([r["engine_wall_ms"] for r in rounds]),
        "threads_ms": {
            k: median([r["threads_ms"].get(k, 0.0) for r in rounds])
            for k in schedstat.ROLES
            if k in roles
        },
        "rounds": rounds,
    }


def measure(
    encoder: TextEncoder,
    targets: Sequence[Target],
    model: str,
    texts: Sequence[str],
    *,
    rounds: int,
    until: float = float("inf"),
    least: int = 2,
) -> dict[str, dict[str, Any]]:
    """Each target's figures (`summary`), from rounds over the same texts (`one_round`); at
    least `least` rounds, no new one past `until` (time.monotonic). One untimed round first:
    warm shapes and connections."""
    one_round(encoder, targets, model, texts, 0)
    got: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for r in range(rounds):
        if r >= least and time.monotonic() > until:
            break
        got_round = one_round(encoder, targets, model, texts, r)
        for name, used in got_round.cpu.items():
            figures = per_round(
                used, got_round.engine, len(texts), got_round.over[name], got_round.engine_walls
            )
            got[name].append(figures)
    return {name: summary(rs, len(texts)) for name, rs in got.items()}


def paired(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`other`'s worker CPU per text minus `base`'s, round by round (same rounds, same engine
    pass): the median difference and in how many rounds `other` was lower."""
    pairs = zip(base["rounds"], other["rounds"], strict=True)
    diffs = [b["server_ms"] - a["server_ms"] for a, b in pairs]
    return {"median_ms": median(diffs), "lower": sum(d < 0 for d in diffs), "rounds": len(diffs)}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m embedder.tools.bench.lone_cpu",
        description="Service CPU per lone text over the engine's, for one level: starts a "
        "gunicorn of each checkout given (default: this one), all on the same texts in turn.",
    )
    ap.add_argument("--level", type=int, default=1, help="quality level (default 1)")
    ap.add_argument("--catalog", choices=("starter", "shapes"), default="starter")
    ap.add_argument("--models-root", type=Path, help="default: as `make bench` finds it")
    ap.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=[],
        help="a checkout whose server to measure (repeatable: compared with the first)",
    )
    ap.add_argument(
        "--models",
        choices=("one", "all", "both"),
        default="one",
        help="what each server loads: the level's model, the whole catalog (as the bench's "
        "servers), or a server of each (what the other models cost a lone run)",
    )
    ap.add_argument("--layout", default="1x2", help="WORKERSxTHREADS (default 1x2)")
    ap.add_argument("--via", choices=("unix", "tcp"), default="unix")
    ap.add_argument("--texts", type=int, default=32, help="texts per round (the bench's)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=120.0, help="no new round past this")
    return ap.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    from embedder.catalog import BUILTIN
    from embedder.settings import Settings, default_models_root
    from embedder.store.files import ModelStore
    from embedder.tools.bench import engine, server
    from embedder.tools.bench.plan import FULL
    from embedder.tools.corpus import corpus

    a = _parse(sys.argv[1:] if argv is None else argv)
    catalog = BUILTIN[a.catalog]
    spec = catalog.levels()[a.level]
    root = (a.models_root or default_models_root(os.environ)).expanduser()
    store = ModelStore(root, catalog, offline=True)
    store.ensure(spec)
    texts = corpus(FULL.corpus_size, FULL.seed)[: a.texts]
    workers, _, threads = a.layout.partition("x")
    sets = {"one": [spec.id], "all": [m.id for m in catalog.models]}
    chosen = list(sets) if a.models == "both" else [a.models]
    for m in catalog.models if "all" in chosen else ():
        store.ensure(m)
    runs = [(c, s) for c in a.checkout or [None] for s in chosen]
    tmp = Path(tempfile.mkdtemp(prefix="embedder-lone-cpu-"))
    servers: list[server.Server] = []
    try:
        for i, (checkout, models) in enumerate(runs):
            servers.append(
                server.start(
                    tmp / str(i),
                    catalog=a.catalog,
                    models_root=root,
                    models=sets[models],
                    workers=int(workers),
                    threads=int(threads),
                    checkout=checkout.resolve() if checkout else None,
                )
            )
        for srv in servers:
            srv.wait_ready()
        for srv in servers:  # the weights' move to huge pages runs after ready
            if not schedstat.quiet(srv.worker_pids):
                print(f"{srv.sockets}: the workers are still busy after load; measuring anyway")
        targets = [
            Target(
                f"{c or 'this checkout'}" + (f" [{m} model(s)]" if len(chosen) > 1 else ""),
                getattr(srv, a.via),
                srv.worker_pids,
            )
            for (c, m), srv in zip(runs, servers, strict=True)
        ]
        # as the servers compute it (they read this environment's EMBEDDER_BACKEND)
        settings = Settings.from_env(dict(os.environ))
        encoder = engine.lone_engine(store, spec, settings, int(threads))
        got = measure(
            encoder, targets, spec.id, texts, rounds=a.rounds, until=time.monotonic() + a.seconds
        )
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    first = got[targets[0].name]
    for t in targets:
        s = got[t.name]
        roles = ", ".join(f"{k} {v:.3f}" for k, v in s["threads_ms"].items())
        print(
            f"{t.name}: {spec.id} via {a.via}, {len(s['rounds'])} rounds x {s['texts']} texts: "
            f"service CPU per lone text {s['over_ms']:.3f} ms over the engine's "
            f"({s['over_min_ms']:.3f}..{s['over_max_ms']:.3f}); worker {s['server_ms']:.3f} ms "
            f"({roles}); engine {s['engine_ms']:.3f} ms (its run {s['engine_run_ms']:.3f}); "
            f"latency {s['latency_over_ms']:.3f} ms over the engine's "
            f"{s['engine_wall_ms']:.3f} (the median text, paired)"
        )
        if s is not first:
            p = paired(first, s)
            print(
                f"  minus {targets[0].name}: {p['median_ms']:+.3f} ms per text "
                f"(lower in {p['lower']}/{p['rounds']} rounds)"
            )
    print(json.dumps({t.name: got[t.name] for t in targets}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
