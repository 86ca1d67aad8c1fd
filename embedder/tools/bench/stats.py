"""Small statistics shared by the benchmark and its load generator, and how it reads a measuring
child process (standard library only)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Completion:
    """One finished request: when it ended, how long it took, and what it carried."""

    end: float
    latency: float
    texts: int
    tokens: int
    index: int = -1  # which text, for single-text requests


@dataclass(frozen=True)
class Rates:
    texts_per_s: float  # median over rounds
    tokens_per_s: float
    rounds: list[float]  # texts/s of each round
    spread: float  # (max - min) / median of the rounds' texts/s: how steady the run was


def window_rates(done: Sequence[Completion], start: float, stop: float, rounds: int) -> Rates:
    """Throughput in `rounds` equal time windows between `start` and `stop`.

    Each request's texts are spread evenly over its lifetime (its latency), and a window counts
    the part of each request that fell inside it. So a burst of answers (one micro-batched run
    answers several requests at once) is not credited to the instant it ended, and requests
    straddling `start` or `stop` count for their share only, as they should.
    """
    span = stop - start
    if span <= 0 or not done:
        return Rates(0.0, 0.0, [], 0.0)
    width = span / max(1, rounds)
    texts = [0.0] * max(1, rounds)
    tokens = [0.0] * max(1, rounds)
    for c in done:
        began = c.end - c.latency
        for i in range(len(texts)):
            lo, hi = start + i * width, start + (i + 1) * width
            overlap = min(hi, c.end) - max(lo, began)
            if overlap > 0:
                share = overlap / c.latency if c.latency > 0 else 1.0
                texts[i] += c.texts * share
                tokens[i] += c.tokens * share
    return rates_of([t / width for t in texts], [t / width for t in tokens])


def rates_of(texts_rates: list[float], token_rates: list[float]) -> Rates:
    mid = median(texts_rates)
    spread = (max(texts_rates) - min(texts_rates)) / mid if mid else 0.0
    return Rates(mid, median(token_rates), texts_rates, spread)


def child_json(cmd: list[str], timeout: float, who: str) -> dict[str, Any]:
    """The last stdout line of a measuring child process, as JSON, or {"skipped": why}: the
    peers run in processes of their own (their imports and threads are not ours)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"{who} took over {timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"skipped": f"{who} failed: {done.stderr.strip()[-500:]}"}
    result = json.loads(lines[-1])
    return result if isinstance(result, dict) else {"skipped": "no result"}
