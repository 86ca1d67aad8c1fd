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
checkpoints the load is drained and, once the workers have handed freed memory back (1.5 s),
each worker's idle RSS is read: what a worker keeps between requests, which is what grows when
memory leaks or fragments. The verdict compares each
worker's median idle RSS in the first and last quarter of the run after warm-up (allocators and
caches settle during warm-up), and counts failed requests.

    python -m embedder.tools.soak --requests 50000 --seconds 7200 --out artifacts/soak

Writes `soak.json` and, when matplotlib is installed (`pip install -e '.[soak]'`), `soak-rss.png`;
prints the RSS curve. Exits 1 if a request failed or a worker's RSS grew more than allowed.
Runs from a source checkout (gunicorn loads `wsgi.py` and `gunicorn.conf.py` from it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedder.client.unixhttp import UnixHTTPConnection
from embedder.settings import default_models_root
from embedder.tools import launch
from embedder.tools.corpus import corpus
from embedder.tools.soak_report import curve, plot, rss_growth

IDLE_SETTLE = 1.5  # s after draining before the idle RSS is read (the service trims at 1 s)
SHED_TRIES = 4  # a request the service sheds as overloaded is sent again up to 3 times


def post(sock: Path, path: str, body: Any, timeout: float = 120.0) -> tuple[int, Any, str | None]:
    """One request on a fresh connection (a kept-alive one closed by the server while idle would
    count as a failure that is not the service's): status, JSON body, Retry-After."""
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None), resp.getheader("Retry-After")
    finally:
        conn.close()


def rpc(sock: Path, method: str, params: Any = None) -> Any:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        msg["params"] = params
    status, doc, _ = post(sock, "/rpc", msg)
    if status != 200 or not isinstance(doc, dict) or "result" not in doc:
        raise RuntimeError(f"{method}: HTTP {status} {str(doc)[:200]}")
    return doc["result"]


# --- the service under test ----------------------------------------------------------------

Service = launch.Gunicorn


def start(workdir: Path, models_root: Path, workers: int, threads: int = 1) -> Service:
    """gunicorn on the starter catalog with its sockets under `workdir`, no TCP, offline."""
    return launch.start(workdir, models_root, workers=workers, threads=threads, tcp=False)


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One way of calling the service: api (rpc or rest), op (embed or rerank), and the level
    or model id it names."""

    api: str
    op: str
    target: str | int

    @property
    def label(self) -> str:
        return f"{self.api}-{self.op}:{self.target}"


def kinds(models: list[dict[str, Any]]) -> list[Kind]:
    """Every loaded level by JSON-RPC quality and every loaded model by REST id, and each
    reranker through both APIs."""
    out: list[Kind] = []
    embedders = sorted(
        (m for m in models if m["kind"] == "embedding" and m["ready"]),
        key=lambda m: (m.get("level") or 99, m["id"]),
    )
    out += [Kind("rpc", "embed", m["level"]) for m in embedders if m.get("level")]
    out += [Kind("rest", "embed", m["id"]) for m in embedders]
    for m in models:
        if m["kind"] == "rerank" and m["ready"]:
            out += [Kind("rpc", "rerank", m["id"]), Kind("rest", "rerank", m["id"])]
    return out


@dataclass(frozen=True)
class Outcome:
    error: str | None = None  # None: the request succeeded
    retry_after: float | None = None  # set when the service shed it as overloaded


def call(service: Service, kind: Kind, texts: list[str], query: str) -> Outcome:
    """Send one request and check its answer has a row per text."""
    n = len(texts)
    if kind.api == "rpc":
        if kind.op == "embed":
            params: dict[str, Any] = {"texts": texts, "quality": kind.target}
        else:
            docs = [{"id": i, "text": t} for i, t in enumerate(texts)]
            params = {"query": query, "docs": docs, "model": kind.target}
        msg = {"jsonrpc": "2.0", "method": kind.op, "params": params, "id": 1}
        status, doc, _ = post(service.sock("rpc.sock"), "/rpc", msg)
        result = doc.get("result") if isinstance(doc, dict) else None
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("code") == -32005:
            return Outcome("overloaded", float((err.get("data") or {}).get("retry_after", 1)))
        rows = result.get("embeddings") if isinstance(result, dict) else result
        got = len(rows) if isinstance(rows, list) else -1
    elif kind.op == "embed":
        body = {"input": texts, "model": kind.target, "encoding_format": "base64"}
        status, doc, after = post(service.sock("rest.sock"), "/v1/embeddings", body)
        got = len(doc.get("data", [])) if status == 200 and isinstance(doc, dict) else -1
    else:
        body = {"query": query, "documents": texts, "model": kind.target}
        status, doc, after = post(service.sock("rest.sock"), "/v1/rerank", body)
        got = len(doc.get("results", [])) if status == 200 and isinstance(doc, dict) else -1
    if status == 200 and got == n:
        return Outcome()
    if (
        kind.api == "rest"
        and status == 503
        and (doc or {}).get("error", {}).get("code") == ("overloaded")
    ):
        return Outcome("overloaded", float(after or 1))
    return Outcome(f"HTTP {status}, {got} of {n} rows: {json.dumps(doc)[:300]}")


@dataclass
class Tally:
    """What the clients did, and the gate that lets the settler drain them: at a checkpoint no
    new request starts until every request in flight has finished and the idle RSS is read."""

    planned: int
    deadline: float
    sent: int = 0
    failed: int = 0
    shed: int = 0  # overloaded refusals, each retried after its Retry-After
    in_flight: int = 0
    paused: bool = False
    by_kind: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[dict[str, Any]] = field(default_factory=list)
    cv: threading.Condition = field(default_factory=threading.Condition)

    def over(self) -> bool:
        return self.sent >= self.planned or time.monotonic() >= self.deadline

    def take(self) -> int | None:
        """The next request's number (waiting out a checkpoint), or None once the count or the
        time is used up."""
        with self.cv:
            while self.paused and not self.over():
                self.cv.wait(0.5)
            if self.over():
                return None
            self.sent += 1
            self.in_flight += 1
            return self.sent - 1

    def done(self, kind: str, took: float, n: int, error: str | None) -> None:
        with self.cv:
            self.in_flight -= 1
            self.by_kind[kind] += 1
            self.latencies[kind].append(took)
            if error is not None:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append({"request": n, "kind": kind, "error": error})
            self.cv.notify_all()

    def drain(self) -> None:
        """Hold new requests and wait for those in flight (each is bounded by its timeout)."""
        with self.cv:
            self.paused = True
            while self.in_flight:
                self.cv.wait(1.0)

    def resume(self) -> None:
        with self.cv:
            self.paused = False
            self.cv.notify_all()


def client(
    service: Service, tally: Tally, rotation: list[Kind], pool: list[str], seed: int, batch: int
) -> None:
    rng = random.Random(seed)
    while (n := tally.take()) is not None:
        kind = rotation[n % len(rotation)]
        texts = rng.sample(pool, rng.randint(1, batch))
        query = rng.choice(pool)[:200]
        t0 = time.monotonic()
        for attempt in range(SHED_TRIES):
            try:
                outcome = call(service, kind, texts, query)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                outcome = Outcome(f"{type(exc).__name__}: {exc}")
            if outcome.retry_after is None or attempt == SHED_TRIES - 1:
                break
            # Shed under overload (two large batches for one slow model on a busy machine):
            # what the openai client does too, wait as told and send it again.
            with tally.cv:
                tally.shed += 1
            time.sleep(min(outcome.retry_after, 10.0))
        tally.done(kind.label, time.monotonic() - t0, n, outcome.error)


def _sample(service: Service, t0: float, idle: bool, out: list[dict[str, Any]]) -> None:
    try:
        info = rpc(service.sock("rpc.sock"), "mem_info")
    except (OSError, ValueError, RuntimeError, http.client.HTTPException):
        return  # a missed sample is no failed request
    t = round(time.monotonic() - t0, 3)
    for w in info["workers"]:
        out.append({"t": t, "pid": w["pid"], "rss": w["rss"], "idle": idle})
    if info.get("master"):
        out.append({"t": t, "pid": "master", "rss": info["master"]["rss"], "idle": idle})


def sampler(
    service: Service, stop: threading.Event, t0: float, every: float, out: list[dict[str, Any]]
) -> None:
    """RSS under load: every worker's (and the master's) every `every` seconds until `stop`."""
    while not stop.wait(every):
        _sample(service, t0, False, out)


def settler(
    service: Service,
    tally: Tally,
    stop: threading.Event,
    t0: float,
    every: float,
    warm: float,
    out: list[dict[str, Any]],
) -> None:
    """At the end of warm-up (`warm` s in) and then `every` seconds of load after the previous
    checkpoint: drain the load, read each worker's idle RSS, resume.

    Under load a sample mostly measures the activations of the batches running at that
    instant (hundreds of MiB, up and down); once drained, RSS is what the worker keeps, which
    is what grows when memory leaks or fragments."""
    marks = [t0 + warm]
    due = t0 + every
    while True:
        if stop.wait(max(0.0, min([due, *marks]) - time.monotonic())):
            return
        marks = [m for m in marks if m > time.monotonic()]
        tally.drain()
        try:
            # A worker hands freed memory back EMBEDDER_IDLE_TRIM (1 s) after its last request.
            stop.wait(IDLE_SETTLE)
            _sample(service, t0, True, out)
        finally:
            tally.resume()
        due = time.monotonic() + every


def run(args: argparse.Namespace) -> dict[str, Any]:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    service = start(workdir, Path(args.models_root), args.workers, args.threads)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        service.wait_ready(timeout=300.0)
        rotation = kinds(rpc(service.sock("rpc.sock"), "models.describe"))
        pool = corpus(3000, seed=args.seed)
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
                args=(service, tally, rotation, pool, args.seed * 1000 + i, args.max_batch),
            )
            for i in range(args.clients)
        ]
        for t in threads + clients:
            t.start()
        for t in clients:
            t.join()
        duration = time.monotonic() - t0
        time.sleep(IDLE_SETTLE)
        _sample(service, t0, True, samples)  # drained: the last idle reading
    finally:
        stop.set()
        for t in threads:
            t.join()
        code = service.stop()
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
        "max_batch": args.max_batch,
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
    p.add_argument("--max-batch", type=int, default=64, help="batch sizes are 1..this")
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
