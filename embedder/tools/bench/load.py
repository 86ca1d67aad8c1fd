"""The load generator: `python -m embedder.tools.bench.load ...` prints one JSON result and exits.

It runs in its own process (so its work is not the server's), with one keep-alive connection
per concurrent client, over loopback TCP or a unix socket only, posting OpenAI-style
`/v1/embeddings` requests (base64 vectors, as the openai client asks by default). Bounded in
requests and in time, it stops by itself. Two ways to load:

- continuous (single-text shapes): each client thread posts back to back (a closed loop). After
  a warm-up (every connection answered once and `--warmup` seconds passed) it measures until it
  has `--rounds` x `--per-round` answers over `--min-seconds`, or `--max-seconds` is reached.
- `--waves` (batched shapes, seconds per request): after one 1-text request per connection,
  each round is a wave of `--concurrency` requests sent at once, timed from the first send to
  the last answer; no wave starts that the last one says would end past `--max-seconds`. A
  round is then a bulk job a client would run, and no work is left running when it stops.

503 answers (the server shedding load) are counted as rejected, and the client waits a little.
Standard library only: it starts fast and takes little CPU (its own CPU time is reported).
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedder.tools.bench.stats import Completion, Rates, median, percentile, rates_of, window_rates
from embedder.tools.bench.wire import connect, post_json, total_tokens


@dataclass
class Plan:
    target: str
    texts: list[str]
    model: str
    batch: int = 1
    concurrency: int = 1
    warmup: float = 0.5
    min_seconds: float = 1.5
    max_seconds: float = 10.0
    max_requests: int = 100_000
    rounds: int = 3
    per_round: int = 1
    timeout: float = 120.0
    per_text: bool = False  # report the median latency of each text (single-text requests)
    waves: bool = False


@dataclass
class _State:
    plan: Plan
    start: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    issued: int = 0
    done: list[Completion] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)  # clients with at least one answer
    warm_end: float | None = None
    warm_count: int = 0
    stop_at: float | None = None
    errors: int = 0
    rejected: int = 0
    error_sample: str = ""
    reconnects: int = 0

    def body(self, i: int, batch: int) -> bytes:
        texts, n = self.plan.texts, len(self.plan.texts)
        chosen: str | list[str] = (
            texts[i % n] if batch == 1 else [texts[(i * batch + k) % n] for k in range(batch)]
        )
        msg = {"model": self.plan.model, "input": chosen, "encoding_format": "base64"}
        return json.dumps(msg).encode()

    def post(self, conn: http.client.HTTPConnection, i: int, batch: int) -> Completion | None:
        """One request; None when it failed or was rejected (counted here)."""
        body = self.body(i, batch)
        began = time.perf_counter()
        try:
            try:
                status, data, retry = post_json(conn, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()  # the server closed an idle keep-alive connection: once more
                with self.lock:
                    self.reconnects += 1
                began = time.perf_counter()
                status, data, retry = post_json(conn, body)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.failed(f"{type(exc).__name__}: {exc}")
            return None
        ended = time.perf_counter()
        if status == 503:
            with self.lock:
                self.rejected += 1
                self.error_sample = self.error_sample or f"HTTP 503: {data[:200]!r}"
            time.sleep(min(retry, 0.25))  # a real client backs off before trying again
            return None
        if status != 200:
            self.failed(f"HTTP {status}: {data[:200]!r}")
            return None
        index = i % len(self.plan.texts) if batch == 1 else -1
        return Completion(ended, ended - began, batch, total_tokens(data), index)

    def next_request(self) -> int | None:
        with self.lock:
            if self.stop.is_set() or self.issued >= self.plan.max_requests:
                return None
            self.issued += 1
            return self.issued - 1

    def record(self, client: int, c: Completion) -> None:
        p = self.plan
        with self.lock:
            self.done.append(c)  # one still in flight at the end counts for its share only
            if self.stop_at is not None:
                return
            self.answered.add(client)
            if self.warm_end is None:
                if c.end - self.start >= p.warmup and len(self.answered) >= p.concurrency:
                    self.warm_end, self.warm_count = c.end, len(self.done)
                return
            measured = len(self.done) - self.warm_count
            if measured >= p.rounds * p.per_round and c.end - self.warm_end >= p.min_seconds:
                self.stop_at = c.end
                self.stop.set()

    def failed(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.error_sample = self.error_sample or message[:300]
            if self.errors >= 20 and self.errors > len(self.done):
                self.stop.set()  # the server is not answering: no point going on


def _client(state: _State, client: int) -> None:
    conn = connect(state.plan.target, state.plan.timeout)
    try:
        while (i := state.next_request()) is not None:
            if (c := state.post(conn, i, 1)) is not None:
                state.record(client, c)
    finally:
        conn.close()


def continuous(state: _State) -> Rates:
    plan = state.plan
    threads = [
        threading.Thread(target=_client, args=(state, w), name=f"client-{w}", daemon=True)
        for w in range(plan.concurrency)
    ]
    for t in threads:
        t.start()
    state.stop.wait(plan.max_seconds)
    with state.lock:
        state.stop_at = state.stop_at or time.perf_counter()
        state.stop.set()
    for t in threads:
        t.join(plan.timeout + 5)
    stop = state.stop_at
    return window_rates(state.done, state.warm_end or state.start, stop, plan.rounds)


def waves(state: _State) -> Rates:
    plan = state.plan
    conns = [connect(plan.target, plan.timeout) for _ in range(plan.concurrency)]
    results: list[Completion | None] = [None] * plan.concurrency

    def one(k: int, i: int, batch: int) -> None:
        results[k] = state.post(conns[k], i, batch)

    def wave(batch: int, first: int) -> tuple[float, list[Completion]]:
        ids = [first + k for k in range(plan.concurrency)]
        state.issued += plan.concurrency
        began = time.perf_counter()
        threads = [threading.Thread(target=one, args=(k, i, batch)) for k, i in enumerate(ids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - began, [c for c in results if c is not None]

    texts_rates: list[float] = []
    token_rates: list[float] = []
    try:
        wave(1, 0)  # warm-up: open every connection with a 1-text request
        state.warm_end = time.perf_counter()
        last = 0.0
        while len(texts_rates) < plan.rounds and state.issued + plan.concurrency <= (
            plan.max_requests
        ):
            if texts_rates and time.perf_counter() + last - state.start > plan.max_seconds:
                break
            last, done = wave(plan.batch, len(texts_rates) * plan.concurrency)
            state.done.extend(done)
            texts_rates.append(sum(c.texts for c in done) / last)
            token_rates.append(sum(c.tokens for c in done) / last)
    finally:
        for conn in conns:
            conn.close()
    return rates_of(texts_rates, token_rates) if texts_rates else Rates(0.0, 0.0, [], 0.0)


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return float(ru.ru_utime + ru.ru_stime)


def run(plan: Plan) -> dict[str, Any]:
    """Drive the load described by `plan`; the result is JSON-ready."""
    cpu0 = _cpu_seconds()
    state = _State(plan)
    rates = waves(state) if plan.waves else continuous(state)
    measured = state.done
    if not plan.waves:  # every request sent in the measured window, however long it took
        first, last = state.warm_end or state.start, state.stop_at or time.perf_counter()
        measured = [c for c in state.done if first <= c.end - c.latency < last]
    lat = [c.latency * 1000 for c in measured]
    out: dict[str, Any] = {
        "texts_per_s": rates.texts_per_s,
        "tokens_per_s": rates.tokens_per_s,
        "rounds": rates.rounds,
        "spread": rates.spread,
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "mean": sum(lat) / len(lat) if lat else 0.0,
        },
        "requests": state.issued,
        "measured": len(measured),
        "warmup_only": state.warm_end is None,
        "errors": state.errors,
        "rejected": state.rejected,
        "error_sample": state.error_sample,
        "reconnects": state.reconnects,
        "wall_s": time.perf_counter() - state.start,
        "cpu_s": _cpu_seconds() - cpu0,
    }
    if plan.per_text:
        by_text: dict[int, list[float]] = {}
        for c in measured:
            by_text.setdefault(c.index, []).append(c.latency * 1000)
        out["per_text_ms"] = {str(i): median(v) for i, v in sorted(by_text.items()) if i >= 0}
    return out


def parse(argv: Sequence[str]) -> Plan:
    ap = argparse.ArgumentParser(prog="python -m embedder.tools.bench.load", description=__doc__)
    ap.add_argument("--target", required=True, help="tcp:127.0.0.1:PORT or unix:/path")
    ap.add_argument("--texts", required=True, type=Path, help="a JSON file: a list of strings")
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1, help="texts per request")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--min-seconds", type=float, default=1.5)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=1, help="answers per round, at least")
    ap.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    ap.add_argument("--per-text", action="store_true", help="median latency of each text")
    ap.add_argument("--waves", action="store_true", help="rounds are waves of concurrent requests")
    a = ap.parse_args(list(argv))
    texts = json.loads(a.texts.read_text(encoding="utf-8"))
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        ap.error(f"{a.texts} must hold a non-empty JSON list of strings")
    return Plan(
        a.target,
        texts,
        a.model,
        max(1, a.batch),
        max(1, a.concurrency),
        a.warmup,
        a.min_seconds,
        a.max_seconds,
        max(1, a.max_requests),
        max(1, a.rounds),
        max(1, a.per_round),
        a.timeout,
        a.per_text,
        a.waves,
    )


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse(sys.argv[1:] if argv is None else argv)
    try:
        connect(plan.target, plan.timeout)  # validates the address before any thread starts
    except ValueError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
