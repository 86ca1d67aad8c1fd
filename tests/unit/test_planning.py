"""The planner: every row once, within the bounds, at the least modelled cost."""

import math

import numpy as np
import pytest

from embedder.planning import OPENVINO_GRID, RunLimits, _run_cost, balance, plan, plan_batches


def test_plan_batches_covers_every_row_once_within_bounds() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(2, 300, size=257)]
    seen: list[int] = []
    for rows in plan_batches(lengths, RunLimits(32, 2048)):
        longest = max(lengths[r] for r in rows)
        assert len(rows) <= 32
        assert len(rows) == 1 or len(rows) * longest <= 2048
        seen.extend(int(r) for r in rows)
    assert sorted(seen) == list(range(len(lengths)))


GRID = RunLimits(32, 2048, grid=OPENVINO_GRID, window=256)


def _cost(plan: list[np.ndarray], lengths: list[int], limits: RunLimits | None = None) -> float:
    shape = (limits or RunLimits()).shape
    return sum(_run_cost(*shape(len(rows), max(lengths[r] for r in rows))) for rows in plan)


@pytest.mark.parametrize("limits", [RunLimits(32, 2048), GRID], ids=["free", "grid"])
def test_plan_batches_is_the_cheapest_contiguous_cut(limits: RunLimits) -> None:
    """Against brute force over every cut of the sorted rows (small n); on a grid, each
    sub-batch priced at the shape it runs as."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        lengths = [int(x) for x in rng.integers(3, 257, size=n)]
        got = _cost(list(plan_batches(lengths, limits)), lengths, limits)
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
                    cost += _run_cost(*limits.shape(rows, desc[start]))
                    start = i + 1
            best = min(best, cost)
        assert got == pytest.approx(best)


def test_one_long_text_does_not_pad_the_short_ones() -> None:
    lengths = [250] + [12] * 31
    plan = list(plan_batches(lengths, RunLimits(32, 8192)))
    assert [len(p) for p in plan] == [1, 31]
    padded = sum(len(p) * max(lengths[r] for r in p) for p in plan)
    assert padded == 250 + 31 * 12  # no padding at all


def test_equal_lengths_share_runs_up_to_the_bounds() -> None:
    """No padding to save, so the fewest runs the bounds allow."""
    rows = [len(p) for p in plan_batches([20] * 70, RunLimits(32, 2048))]
    assert len(rows) == 3 and max(rows) <= 32 and sum(rows) == 70
    rows = [len(p) for p in plan_batches([256] * 9, RunLimits(32, 1024))]
    assert len(rows) == 3 and max(rows) <= 4 and sum(rows) == 9


def test_balance_splits_the_costliest_run_for_idle_runners() -> None:
    lengths = [100] * 16 + [10] * 3  # no padding to save: the plan runs the 16 together
    plan = list(plan_batches(lengths, RunLimits(32, 2048)))
    costs = [_run_cost(len(p), max(lengths[r] for r in p)) for p in plan]
    assert max(costs) * 2 > sum(costs)  # one run holds most of the work
    split = balance(plan, lengths, 2)
    assert sorted(int(r) for p in split for r in p) == list(range(len(lengths)))
    costs = [_run_cost(len(p), max(lengths[r] for r in p)) for p in split]
    assert max(costs) * 2 <= sum(costs) + 1e-9 or all(len(p) == 1 for p in split)
    assert balance(plan, lengths, 1) == plan


def test_a_grid_rounds_rows_and_lengths_up_within_the_window_and_the_batch() -> None:
    assert [OPENVINO_GRID.length(n, 512) for n in (1, 8, 9, 65, 129, 257, 500)] == [
        8,
        8,
        16,
        80,
        160,
        320,
        512,
    ]
    assert OPENVINO_GRID.length(200, 210) == 210  # the window ends before the next step
    assert OPENVINO_GRID.length(300, 256) == 300  # a text past the window is never cut
    assert [OPENVINO_GRID.row_count(n, 32) for n in (1, 5, 7, 17, 25)] == [1, 6, 8, 24, 32]
    assert OPENVINO_GRID.row_count(17, 20) == 20  # max_batch 20: no run past it
    assert RunLimits().shape(17, 9) == (17, 9)  # no grid: the plan's own shape


def test_on_a_grid_the_shapes_are_few_whatever_the_texts() -> None:
    """What the grid is for: OpenVINO keeps what it built for every shape it ran, so the
    shapes a model runs must be a small set, not one per batch."""
    rng = np.random.default_rng(5)
    shapes: set[tuple[int, int]] = set()
    free: set[tuple[int, int]] = set()
    for _ in range(400):
        lengths = [int(x) for x in rng.integers(1, 257, size=int(rng.integers(1, 80)))]
        for parallel in (1, 2):
            for rows in plan(lengths, GRID, parallel):
                longest = max(lengths[r] for r in rows)
                shapes.add(GRID.shape(len(rows), longest))
                free.add((len(rows), longest))
    steps = {(r, n) for r in OPENVINO_GRID.rows for n in OPENVINO_GRID.lengths}
    assert shapes <= steps | {(r, 256) for r in OPENVINO_GRID.rows}
    assert len(shapes) <= 150 < len(free)


def test_on_a_grid_no_sub_batch_pads_past_the_token_bound() -> None:
    """641 tokens run as 768: three of them are 2,304 padded tokens, over 2,048."""
    limits = RunLimits(32, 2048, grid=OPENVINO_GRID, window=8192)
    for lengths in ([641] * 3, [65] * 31, [300, 290, 280, 270, 260, 250, 240, 230]):
        for rows in plan_batches(lengths, limits):
            r, n = limits.shape(len(rows), max(lengths[i] for i in rows))
            assert len(rows) == 1 or r * n <= 2048, (lengths, len(rows), r, n)
