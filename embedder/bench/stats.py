"""Small statistics shared by the benchmark and its load generator (standard library only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Rates:
    texts_per_s: float  # median over rounds
    tokens_per_s: float
    rounds: list[float]  # texts/s of each round
    spread: float  # (max - min) / median of the rounds' texts/s: how steady the run was


def round_rates(done: Sequence[Completion], start: float, rounds: int) -> Rates:
    """Throughput over consecutive rounds of equal request counts.

    Completions are sorted by end time and cut into `rounds` groups; a round spans from the
    end of the previous group (or `start`) to the end of its own last request, so no work is
    counted twice and no idle gap between rounds is left out.
    """
    ordered = sorted(done, key=lambda c: c.end)
    rounds = max(1, min(rounds, len(ordered)))
    if not ordered:
        return Rates(0.0, 0.0, [], 0.0)
    texts_rates: list[float] = []
    token_rates: list[float] = []
    edge = start
    for i in range(rounds):
        group = ordered[len(ordered) * i // rounds : len(ordered) * (i + 1) // rounds]
        span = max(group[-1].end - edge, 1e-9)
        texts_rates.append(sum(c.texts for c in group) / span)
        token_rates.append(sum(c.tokens for c in group) / span)
        edge = group[-1].end
    mid = median(texts_rates)
    spread = (max(texts_rates) - min(texts_rates)) / mid if mid else 0.0
    return Rates(mid, median(token_rates), texts_rates, spread)
