"""The planner: every row once, within the bounds, at the least modelled cost."""

import math

import numpy as np
import pytest

from embedder.planning import _run_cost, balance, plan_batches


def test_plan_batches_covers_every_row_once_within_bounds() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(2, 300, size=257)]
    seen: list[int] = []
    for rows in plan_batches(lengths, max_batch=32, max_batch_tokens=2048):
        longest = max(lengths[r] for r in rows)
        assert len(rows) <= 32
        assert len(rows) == 1 or len(rows) * longest <= 2048
        seen.extend(int(r) for r in rows)
    assert sorted(seen) == list(range(len(lengths)))


def _cost(plan: list[np.ndarray], lengths: list[int]) -> float:
    return sum(_run_cost(len(rows), max(lengths[r] for r in rows)) for rows in plan)


def test_plan_batches_is_the_cheapest_contiguous_cut() -> None:
    """Against brute force over every cut of the sorted rows (small n)."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        lengths = [int(x) for x in rng.integers(3, 257, size=n)]
        got = _cost(list(plan_batches(lengths, max_batch=32, max_batch_tokens=2048)), lengths)
        desc = sorted(lengths, reverse=True)
        best = math.inf
        for mask in range(1 << (n - 1)):  # bit i set: cut after sorted row i
            cost, start = 0.0, 0
            for i in range(n):
                if i == n - 1 or mask >> i & 1:
                    rows = i + 1 - start
                    if rows > 1 and rows * desc[start] > 2048:
                        cost = math.inf
                        break
                    cost += _run_cost(rows, desc[start])
                    start = i + 1
            best = min(best, cost)
        assert got == pytest.approx(best)


def test_one_long_text_does_not_pad_the_short_ones() -> None:
    lengths = [250] + [12] * 31
    plan = list(plan_batches(lengths, max_batch=32, max_batch_tokens=8192))
    assert [len(p) for p in plan] == [1, 31]
    padded = sum(len(p) * max(lengths[r] for r in p) for p in plan)
    assert padded == 250 + 31 * 12  # no padding at all


def test_equal_lengths_share_runs_up_to_the_bounds() -> None:
    """No padding to save, so the fewest runs the bounds allow."""
    rows = [len(p) for p in plan_batches([20] * 70, max_batch=32, max_batch_tokens=2048)]
    assert len(rows) == 3 and max(rows) <= 32 and sum(rows) == 70
    rows = [len(p) for p in plan_batches([256] * 9, max_batch=32, max_batch_tokens=1024)]
    assert len(rows) == 3 and max(rows) <= 4 and sum(rows) == 9


def test_balance_splits_the_costliest_run_for_idle_runners() -> None:
    lengths = [100] * 16 + [10] * 3  # no padding to save: the plan runs the 16 together
    plan = list(plan_batches(lengths, max_batch=32, max_batch_tokens=2048))
    costs = [_run_cost(len(p), max(lengths[r] for r in p)) for p in plan]
    assert max(costs) * 2 > sum(costs)  # one run holds most of the work
    split = balance(plan, lengths, 2)
    assert sorted(int(r) for p in split for r in p) == list(range(len(lengths)))
    costs = [_run_cost(len(p), max(lengths[r] for r in p)) for p in split]
    assert max(costs) * 2 <= sum(costs) + 1e-9 or all(len(p) == 1 for p in split)
    assert balance(plan, lengths, 1) == plan
