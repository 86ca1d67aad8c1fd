"""Tokenizer loading and batch assembly shared by the embedder and the reranker."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from embedder.errors import ModelUnavailable


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """A tokenizer that truncates at `max_tokens` and never pads: padding is per sub-batch.

    Some shipped tokenizer.json files carry fixed padding/truncation (all-MiniLM-L6-v2's pads
    every text to 128); both are overridden here so the catalog's limit is the only one.
    """
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelUnavailable(f"cannot load tokenizer {path}: {exc}") from exc
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


@dataclass(frozen=True)
class Batch:
    """One padded sub-batch: `rows` are positions in the caller's order."""

    rows: np.ndarray
    feeds: dict[str, np.ndarray]
    mask: np.ndarray


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
    ones made a 32-row batch mostly padding (measured: 27% real tokens, 35 texts/s against
    102-136 with small batches). The cut points come from a dynamic programme over the sorted
    lengths minimising the modelled run cost (per-run overhead + padded tokens, attention
    growing with length). A sub-batch also ends at `max_batch` rows or `max_batch_tokens`
    padded tokens (peak activation memory, and cache: per-token cost rose up to 2x past
    ~2048 padded tokens here), though a single row may exceed that.
    """
    if len(lengths) == 1:  # a lone text: one run (the general path costs ~15 us of numpy)
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


def assemble(encodings: Sequence[Encoding], rows: np.ndarray, input_names: set[str]) -> Batch:
    """Pad the chosen encodings to their longest and build the feeds the graph declares."""
    chosen = [encodings[i] for i in rows]
    seq = max(len(e.ids) for e in chosen)
    ids = np.zeros((len(chosen), seq), dtype=np.int64)
    mask = np.zeros((len(chosen), seq), dtype=np.int64)
    types = np.zeros((len(chosen), seq), dtype=np.int64)
    for r, enc in enumerate(chosen):
        n = len(enc.ids)
        ids[r, :n] = enc.ids
        mask[r, :n] = 1
        types[r, :n] = enc.type_ids
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    feeds = {name: available[name] for name in input_names if name in available}
    return Batch(rows=rows, feeds=feeds, mask=mask)


def graph_inputs(session: Any) -> set[str]:
    names = {i.name for i in session.get_inputs()}
    unknown = names - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown or "input_ids" not in names:
        raise ModelUnavailable(f"unsupported graph inputs: {sorted(names)}")
    return names


def pick_output(session: Any, wanted: str | None, rank: int) -> str:
    """The named output, or the first float output of the given rank.

    paraphrase-MiniLM-L3-v2's export has four outputs (two echo the inputs); the token
    embeddings are the 3-D float one.
    """
    outputs = session.get_outputs()
    if wanted is not None:
        if wanted not in {o.name for o in outputs}:
            raise ModelUnavailable(f"graph has no output {wanted!r}")
        return wanted
    for o in outputs:
        if o.type == "tensor(float)" and len(o.shape) == rank:
            return str(o.name)
    raise ModelUnavailable(f"graph has no {rank}-D float output")
