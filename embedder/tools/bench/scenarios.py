"""Load runs against a live server, each in a separate load-generator process, within the
run's time budget: every run gets a share of the time left, by weight."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.tools.bench.machine import Others, cores
from embedder.tools.bench.plan import Options, Shape, Timing
from embedder.tools.bench.server import Server


class Clock:
    """Elapsed time against the budget, and progress lines on stderr."""

    def __init__(self, budget: float) -> None:
        self.began = time.monotonic()
        self.budget = budget

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began

    @property
    def left(self) -> float:
        return self.budget - self.elapsed

    def say(self, message: str) -> None:
        print(f"[{self.elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Scheduler:
    """Shares the time left among the load runs still to come, by their weights."""

    clock: Clock
    weight_left: float
    tail: float = 12.0  # stopping the servers, writing the report
    overhead: float = 1.0  # per run: starting the load generator, finishing requests in flight

    def slot(self, timing: Timing) -> float | None:
        """Seconds for the next run; None when even its floor no longer fits."""
        left = self.clock.left - self.tail
        runs = max(1.0, self.weight_left / max(timing.weight, 1e-9))
        share = left * timing.weight / max(self.weight_left, timing.weight) - self.overhead
        self.weight_left = max(0.0, self.weight_left - timing.weight)
        if left < timing.floor + self.overhead or left / runs < self.overhead:
            return None
        return max(timing.floor, min(timing.max_seconds, share))


def run_load(
    opts: Options,
    srv: Server,
    transport: str,
    model: str,
    shape: Shape,
    texts: Path,
    seconds: float,
) -> dict[str, Any]:
    """One load shape from a separate load-generator process, with the server's CPU meanwhile."""
    t = opts.timing(shape)
    c = shape.concurrency
    argv = [sys.executable, "-m", "embedder.tools.bench.load"]
    argv += ["--target", srv.tcp if transport == "tcp" else srv.unix, "--texts", str(texts)]
    argv += ["--model", model, "--batch", str(shape.batch), "--concurrency", str(c)]
    argv += ["--warmup", str(t.warmup), "--min-seconds", str(min(t.min_seconds, seconds))]
    argv += ["--max-seconds", f"{seconds:.2f}", "--max-requests", str(t.max_requests)]
    argv += ["--rounds", str(t.rounds), "--per-round", str(max(t.per_round, 2 * c))]
    argv += ["--timeout", "120"]
    if shape.batch > 1:
        argv.append("--waves")
    elif c == 1:
        argv.append("--per-text")
    before = srv.cpu_by_worker()
    others = Others()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 150)
    except subprocess.TimeoutExpired:
        return {"error": "the load generator did not stop in time"}
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"load generator failed: {done.stderr.strip()[-400:]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    after = srv.cpu_by_worker()
    per_worker = [after[p] - before.get(p, 0.0) for p in sorted(after)]
    wall = float(result.get("wall_s") or 0.0) or 1e-9
    used = sum(per_worker)
    result["server_cpu_s"] = used
    result["server_cpu_share"] = used / (wall * cores())
    result["worker_cpu_split"] = [w / used if used else 0.0 for w in per_worker]
    result["load_cpu_share"] = float(result.get("cpu_s") or 0.0) / (wall * cores())
    result["others_cpu_share"] = others.share(ours=used)
    result["slot_s"] = seconds
    return result


def brief(row: dict[str, Any]) -> str:
    if "error" in row:
        return str(row["error"])
    lat = row["latency_ms"]
    extra = f", {row['rejected']} rejected (503)" if row.get("rejected") else ""
    return (
        f"{row['texts_per_s']:.1f} texts/s, p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
        f"({len(row['rounds'])} rounds{extra})"
    )
