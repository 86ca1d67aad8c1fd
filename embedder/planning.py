"""Which texts run together: the cost model of one ONNX Runtime run, the plan that cuts sorted
lengths into the sub-batches that cost least, and the balance of a plan over idle runners.
Shared by the encoder, the cross-encoder and the batcher's admission (`text_cost`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunLimits:
    """Bounds of one ONNX Runtime run: rows, and padded tokens (bounds activation memory)."""

    max_batch: int = 32
    max_batch_tokens: int = 2048


# Cost of one run in token units, fitted on all-MiniLM-L6-v2 FP32 and INT8 at 1 thread
# (tests of rows 1-32 x length 8-256): a fixed ~7-10 tokens per run, and per padded token
# 1 + length / 450-800 (attention grows with length). Only the ratios matter for the plan.
RUN_OVERHEAD_TOKENS = 8.0
ATTENTION_LENGTH = 512.0


def _run_cost(rows: int, length: int) -> float:
    return RUN_OVERHEAD_TOKENS + rows * length * (1.0 + length / ATTENTION_LENGTH)


def text_cost(length: int) -> float:
    """One text's share of run time in the cost model's token units (its run overhead is
    folded into the measured rate): what admission estimates queued work by, since a
    512-token text costs ~150x a 6-token one where counting texts calls them equal."""
    return 1.0 + length * (1.0 + length / ATTENTION_LENGTH)


def plan_batches(
    lengths: Sequence[int], *, max_batch: int, max_batch_tokens: int
) -> Iterator[np.ndarray]:
    """Sort by length, then cut into the sub-batches that cost least to run.

    Every row of a sub-batch is padded to its longest, so one 256-token text among 31 short
    ones made a 32-row batch mostly padding (docs/performance.md). The cut points come from a
    dynamic programme over the sorted lengths minimising the modelled run cost (per-run
    overhead + padded tokens, attention growing with length). A sub-batch also ends at
    `max_batch` rows or `max_batch_tokens` padded tokens (peak activation memory, and cache:
    per-token cost rises past a few thousand padded tokens), though a single row may exceed
    that.
    """
    if len(lengths) == 1:  # a lone text: one run, without the general path's numpy
        yield np.zeros(1, dtype=np.intp)
        return
    order = np.argsort(np.asarray(lengths), kind="stable")[::-1]
    longest = [max(int(lengths[i]), 1) for i in order]  # descending
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest plan for the j longest rows
    cut = [0] * (n + 1)
    for start in range(n):
        base = best[start]
        length = longest[start]  # the first row of a sub-batch is its longest
        cap = max(1, min(max_batch, max_batch_tokens // length))
        for rows in range(1, min(cap, n - start) + 1):
            cost = base + _run_cost(rows, length)
            if cost < best[start + rows]:
                best[start + rows] = cost
                cut[start + rows] = start
    ends = []
    j = n
    while j > 0:
        ends.append(j)
        j = cut[j]
    start = 0
    for end in reversed(ends):
        yield order[start:end]
        start = end


def balance(plan: list[np.ndarray], lengths: Sequence[int], parallel: int) -> list[np.ndarray]:
    """Split the costliest sub-batches in two until none costs more than 1/`parallel` of the
    whole, so `parallel` runners sharing the plan finish together (one 32-text request on two
    runners otherwise waits for whichever got the sub-batch of long texts). Costs a few
    tokens of run overhead per split, so only worth it when the runners have nothing else."""
    if parallel < 2 or len(lengths) < 2:
        return plan

    def cost(rows: np.ndarray) -> float:
        return _run_cost(len(rows), max(int(lengths[r]) for r in rows))

    out = list(plan)
    for _ in range(4 * parallel):
        costs = [cost(rows) for rows in out]
        k = max(range(len(out)), key=costs.__getitem__)
        if costs[k] * parallel <= sum(costs) or len(out[k]) < 2:
            break
        rows = out[k]  # longest first: the first half holds the longest texts
        half = len(rows) // 2
        out[k : k + 1] = [rows[:half], rows[half:]]
    return out


def plan(lengths: Sequence[int], limits: RunLimits, parallel: int = 1) -> list[np.ndarray]:
    """Row groups, one per run (`plan_batches`), balanced for `parallel` idle runners
    (`balance`): what the encoder and the cross-encoder hand their runners."""
    cuts = plan_batches(
        lengths, max_batch=limits.max_batch, max_batch_tokens=limits.max_batch_tokens
    )
    return balance(list(cuts), lengths, parallel)
