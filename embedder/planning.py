"""Which texts run together: the cost model of one ONNX Runtime run, the plan that cuts sorted
lengths into the sub-batches that cost least, and the balance of a plan over idle runners.
Shared by the encoder, the cross-encoder and the batcher's admission (`text_cost`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ShapeGrid:
    """The shapes a runtime is given: a sub-batch's rows and padded length rounded up to the
    next of these. OpenVINO's CPU plugin keeps kernels and memory for every input shape it
    has run, for good (neither its runtime cache's capacity nor `release_memory` bounds
    them): a worker fed the planner's free shapes grew with every new one for as long as it
    served (docs/openvino.md). On a grid the set of shapes is finite, so the worker's memory
    levels off; the planner prices the padding (`plan_batches`), so it cuts sub-batches
    where the grid wastes least. Lengths step by 8 tokens up to 64 (short texts are most of
    the traffic), then by at most a quarter; rows by at most a half, which the plan pads
    only where a run saved is worth more (short texts)."""

    lengths: tuple[int, ...]
    rows: tuple[int, ...]

    def length(self, n: int, cap: int) -> int:
        """The padded length of a sub-batch whose longest text has `n` tokens, never past
        `cap` (the model's window: its position table may end there) unless `n` does."""
        return max(n, min(_next(self.lengths, n), cap))

    def row_count(self, n: int, cap: int) -> int:
        """The rows a sub-batch of `n` texts runs with (the extra rows repeat its first)."""
        return max(n, min(_next(self.rows, n), cap))


def session_limits(limits: RunLimits, session: Any, window: int) -> RunLimits:
    """`limits` for runs on `session`, in a model of `window` tokens: with its runtime's shape
    grid, if it has one (`shape_grid`: OpenVINO's sessions)."""
    return replace(limits, grid=getattr(session, "shape_grid", None), window=window)


def _next(steps: tuple[int, ...], n: int) -> int:
    for step in steps:
        if step >= n:
            return step
    return n


def _steps(*spans: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(sorted({v for start, stop, step in spans for v in range(start, stop + 1, step)}))


OPENVINO_GRID = ShapeGrid(
    lengths=_steps((8, 64, 8), (80, 128, 16), (160, 256, 32), (320, 512, 64), (640, 8192, 128)),
    rows=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
)


@dataclass(frozen=True)
class RunLimits:
    """Bounds of one run: rows, and padded tokens (bounds activation memory); and the shapes
    the session runs, where its runtime wants a grid of them (`ShapeGrid`), with the
    model's window, past which no text is padded."""

    max_batch: int = 32
    max_batch_tokens: int = 2048
    grid: ShapeGrid | None = None
    window: int = 512

    def shape(self, rows: int, length: int) -> tuple[int, int]:
        """The rows and length a sub-batch of `rows` texts, the longest `length` tokens,
        runs as: on the grid if there is one."""
        return self.run_rows(rows), self.run_length(length)

    def run_rows(self, rows: int) -> int:
        return rows if self.grid is None else self.grid.row_count(rows, max(rows, self.max_batch))

    def run_length(self, length: int) -> int:
        return length if self.grid is None else self.grid.length(length, self.window)


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


def plan_batches(lengths: Sequence[int], limits: RunLimits) -> Iterator[np.ndarray]:
    """Sort by length, then cut into the sub-batches that cost least to run.

    Every row of a sub-batch is padded to its longest, so one 256-token text among 31 short
    ones made a 32-row batch mostly padding (docs/performance.md). The cut points come from a
    dynamic programme over the sorted lengths minimising the modelled run cost (per-run
    overhead + padded tokens, attention growing with length). A sub-batch also ends at
    `limits.max_batch` rows or `limits.max_batch_tokens` padded tokens (peak activation
    memory, and cache: per-token cost rises past a few thousand padded tokens), though a
    single row may exceed that. With a grid (`limits.grid`) each sub-batch is priced at the
    shape it runs as.
    """
    if len(lengths) == 1:  # a lone text: one run, without the general path's numpy
        yield np.zeros(1, dtype=np.intp)
        return
    order = np.argsort(np.asarray(lengths), kind="stable")[::-1]
    longest = [max(int(lengths[i]), 1) for i in order]  # descending
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest plan for the j longest rows
    cut = [0] * (n + 1)
    run_rows = [limits.run_rows(rows) for rows in range(min(limits.max_batch, n) + 1)]
    for start in range(n):
        base = best[start]
        length = longest[start]  # the first row of a sub-batch is its longest
        padded = limits.run_length(length)  # the DP's inner loop is the plan's hot path
        cap = max(1, min(limits.max_batch, limits.max_batch_tokens // length))
        for rows in range(1, min(cap, n - start) + 1):
            if rows > 1 and run_rows[rows] * padded > limits.max_batch_tokens:
                break  # on a grid the padding may take a sub-batch past the bound
            cost = base + _run_cost(run_rows[rows], padded)
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


def balance(
    plan: list[np.ndarray],
    lengths: Sequence[int],
    parallel: int,
    limits: RunLimits | None = None,
) -> list[np.ndarray]:
    """Split the costliest sub-batches in two until none costs more than 1/`parallel` of the
    whole, so `parallel` runners sharing the plan finish together (one 32-text request on two
    runners otherwise waits for whichever got the sub-batch of long texts). Costs a few
    tokens of run overhead per split, so only worth it when the runners have nothing else."""
    if parallel < 2 or len(lengths) < 2:
        return plan
    shape = (limits or RunLimits()).shape

    def cost(rows: np.ndarray) -> float:
        return _run_cost(*shape(len(rows), max(int(lengths[r]) for r in rows)))

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
    cuts = plan_batches(lengths, limits)
    return balance(list(cuts), lengths, parallel, limits)
