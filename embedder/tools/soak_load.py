"""The soak's load: the requests it sends, the tally of what came back, and the threads that
send load, sample RSS under load and drain the load at checkpoints to read idle RSS.

`embedder.tools.soak` is the command that starts the service and runs these; this module only talks
to a running one over its unix sockets.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedder.client.unixhttp import UnixHTTPConnection
from embedder.tools import launch

IDLE_SETTLE = 1.5  # s after draining before the idle RSS is read (the service trims at 1 s)
SETTLE_STEP = 0.25  # s between idle readings while a worker's RSS still falls
SETTLE_DROP = 1 << 20  # bytes: a smaller fall between two readings is noise
SETTLE_BOUND = 10.0  # s at most spent waiting for the idle RSS to stop falling
SHED_TRIES = 4  # a request the service sheds as overloaded is sent again up to 3 times

Service = launch.Gunicorn


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


# --- what to send --------------------------------------------------------------------------


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
class Shapes:
    """How large the requests are: embed requests carry 1..`max_batch` texts, rerank requests
    1..`max_docs` documents, or exactly that many with `full` (the largest shapes every time);
    `timeout` bounds each request on the client side (generous when big requests share a
    busy CPU: a slow answer is the service's to bound, with its own 503), and a request shed
    as overloaded waits its Retry-After, at most `retry_wait` seconds, before it is sent again."""

    max_batch: int = 64
    max_docs: int = 64
    full: bool = False
    timeout: float = 120.0
    retry_wait: float = 10.0

    def count(self, rng: random.Random, op: str) -> int:
        top = self.max_docs if op == "rerank" else self.max_batch
        return top if self.full else rng.randint(1, top)


def long_texts(pool: list[str], words: int, n: int, seed: int = 0) -> list[str]:
    """`n` texts of at least `words` words each, joined from corpus texts (a WordPiece token
    per word at the least, so each fills a model window of that many tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts: list[str] = []
        count = 0
        while count < words:
            parts.append(rng.choice(pool))
            count += len(parts[-1].split())
        out.append(" ".join(parts))
    return out


@dataclass(frozen=True)
class Outcome:
    error: str | None = None  # None: the request succeeded
    retry_after: float | None = None  # set when the service shed it as overloaded


def call(service: Service, kind: Kind, texts: list[str], query: str, timeout: float) -> Outcome:
    """Send one request and check its answer has a row per text."""
    n = len(texts)
    if kind.api == "rpc":
        if kind.op == "embed":
            params: dict[str, Any] = {"texts": texts, "quality": kind.target}
        else:
            docs = [{"id": i, "text": t} for i, t in enumerate(texts)]
            params = {"query": query, "docs": docs, "model": kind.target}
        msg = {"jsonrpc": "2.0", "method": kind.op, "params": params, "id": 1}
        status, doc, _ = post(service.sock("rpc.sock"), "/rpc", msg, timeout)
        result = doc.get("result") if isinstance(doc, dict) else None
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("code") == -32005:
            return Outcome("overloaded", float((err.get("data") or {}).get("retry_after", 1)))
        rows = result.get("embeddings") if isinstance(result, dict) else result
        got = len(rows) if isinstance(rows, list) else -1
    elif kind.op == "embed":
        body = {"input": texts, "model": kind.target, "encoding_format": "base64"}
        status, doc, after = post(service.sock("rest.sock"), "/v1/embeddings", body, timeout)
        got = len(doc.get("data", [])) if status == 200 and isinstance(doc, dict) else -1
    else:
        body = {"query": query, "documents": texts, "model": kind.target}
        status, doc, after = post(service.sock("rest.sock"), "/v1/rerank", body, timeout)
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


# --- the tally and its gate ----------------------------------------------------------------


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


# --- the threads ---------------------------------------------------------------------------


def client(
    service: Service,
    tally: Tally,
    rotation: list[Kind],
    pool: list[str],
    seed: int,
    shapes: Shapes,
) -> None:
    rng = random.Random(seed)
    while (n := tally.take()) is not None:
        kind = rotation[n % len(rotation)]
        texts = rng.sample(pool, min(len(pool), shapes.count(rng, kind.op)))
        query = rng.choice(pool)[:200]
        t0 = time.monotonic()
        for attempt in range(SHED_TRIES):
            try:
                outcome = call(service, kind, texts, query, shapes.timeout)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                outcome = Outcome(f"{type(exc).__name__}: {exc}")
            if outcome.retry_after is None or attempt == SHED_TRIES - 1:
                break
            # Shed under overload (two large batches for one slow model on a busy machine):
            # what the openai client does too, wait as told and send it again.
            with tally.cv:
                tally.shed += 1
            time.sleep(min(outcome.retry_after, shapes.retry_wait))
        tally.done(kind.label, time.monotonic() - t0, n, outcome.error)


def _read(service: Service) -> dict[Any, int] | None:
    """Every worker's (and the master's) RSS in bytes now, by pid; None if it cannot be read."""
    try:
        info = rpc(service.sock("rpc.sock"), "mem_info")
    except (OSError, ValueError, RuntimeError, http.client.HTTPException):
        return None  # a missed sample is no failed request
    rss: dict[Any, int] = {w["pid"]: w["rss"] for w in info["workers"]}
    if info.get("master"):
        rss["master"] = info["master"]["rss"]
    return rss


def _append(rss: dict[Any, int], t0: float, idle: bool, out: list[dict[str, Any]]) -> None:
    t = round(time.monotonic() - t0, 3)
    out.extend({"t": t, "pid": pid, "rss": v, "idle": idle} for pid, v in rss.items())


def sample(service: Service, t0: float, idle: bool, out: list[dict[str, Any]]) -> None:
    """Every worker's (and the master's) RSS now, appended to `out`."""
    rss = _read(service)
    if rss is not None:
        _append(rss, t0, idle, out)


def idle_sample(
    service: Service,
    t0: float,
    out: list[dict[str, Any]],
    wait: Callable[[float], object] = time.sleep,
) -> None:
    """Every worker's idle RSS, read once it has stopped falling: a worker hands freed memory
    back 1 s after its last request (embedder.memory), and on a loaded machine that trim may
    still run, or not have begun, when IDLE_SETTLE is over. A reading taken then counts what
    the worker is about to give back (a soak read one such as 11 % growth). So after
    IDLE_SETTLE it reads again every SETTLE_STEP while any worker's RSS fell by more than
    SETTLE_DROP since the last reading, for at most SETTLE_BOUND."""
    wait(IDLE_SETTLE)
    last = _read(service)
    deadline = time.monotonic() + SETTLE_BOUND
    while last is not None and time.monotonic() < deadline:
        wait(SETTLE_STEP)
        now = _read(service)
        if now is None:
            break
        falling = any(now.get(pid, rss) < rss - SETTLE_DROP for pid, rss in last.items())
        last = now
        if not falling:
            break
    if last is not None:
        _append(last, t0, True, out)


def sampler(
    service: Service, stop: threading.Event, t0: float, every: float, out: list[dict[str, Any]]
) -> None:
    """RSS under load: every worker's (and the master's) every `every` seconds until `stop`."""
    while not stop.wait(every):
        sample(service, t0, False, out)


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
            idle_sample(service, t0, out, stop.wait)
        finally:
            tally.resume()
        due = time.monotonic() + every
