"""Text -> vectors: tokenise, length-sorted sub-batches, run, pool, L2-normalise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from embedder.catalog import ModelSpec
from embedder.planning import balance, plan_batches
from embedder.tokens import assemble, graph_inputs, pick_output


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dims], unit length, in the caller's order
    tokens: list[int]  # real tokens per input, special tokens included, after truncation
    truncated: list[bool]

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


@dataclass(frozen=True)
class Tokenized:
    """Texts after the tokenizer: what planning and runs need."""

    encodings: list[Encoding]
    lengths: list[int]  # tokens per text, special tokens included, after truncation

    def __add__(self, other: Tokenized) -> Tokenized:
        return Tokenized(self.encodings + other.encodings, self.lengths + other.lengths)


@dataclass(frozen=True)
class BatchLimits:
    """Sub-batch bounds: rows per run and padded tokens per run (bounds activation memory)."""

    max_batch: int = 32
    max_batch_tokens: int = 2048


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    if how == "cls":
        return np.asarray(hidden[:, 0, :])
    weights = mask[:, :, None].astype(hidden.dtype)
    summed = (hidden * weights).sum(axis=1)
    return np.asarray(summed / np.maximum(weights.sum(axis=1), 1.0))


class Embedder:
    """One embedding model: a session, its tokenizer and what the catalog says of it.

    Thread-safe: ORT's `run` may be called from several threads at once.
    """

    def __init__(
        self,
        spec: ModelSpec,
        session: Any,
        tokenizer: Tokenizer,
        limits: BatchLimits | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.tokenizer = tokenizer
        self.limits = limits or BatchLimits()
        self.inputs = graph_inputs(session)
        self.output = pick_output(session, spec.output, rank=3)
        self.pooling = spec.pooling or "mean"
        probe = self.session.get_outputs()
        shape = next(o.shape for o in probe if o.name == self.output)
        self.dims = int(shape[-1]) if isinstance(shape[-1], int) else (spec.dims or 0)

    def instruct(self, texts: Sequence[str]) -> list[str]:
        """Texts with the model's retrieval-query instruction, if it has one."""
        prefix = self.spec.query_instruction or ""
        return [prefix + t for t in texts]

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> Tokenized:
        batch = self.instruct(texts) if query else list(texts)
        encodings = self.tokenizer.encode_batch(batch)
        return Tokenized(encodings, [len(e.ids) for e in encodings])

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        """Row groups, one per ONNX Runtime run (see `planning.plan_batches`), balanced for
        `parallel` runners (`planning.balance`)."""
        limits = self.limits
        plan = plan_batches(
            lengths, max_batch=limits.max_batch, max_batch_tokens=limits.max_batch_tokens
        )
        return balance(list(plan), lengths, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        """Pooled, not yet normalised vectors of `rows`, in one run on this embedder's session."""
        sub = assemble(tok.encodings, rows, self.inputs)
        (hidden,) = self.session.run([self.output], sub.feeds)
        return pool(hidden, sub.mask, self.pooling)

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings:
        return Embeddings(
            vectors=l2_normalize(pooled),
            tokens=list(tok.lengths),
            truncated=[bool(e.overflowing) for e in tok.encodings],
        )

    def embed(self, texts: Sequence[str], *, query: bool = False) -> Embeddings:
        """Vectors for `texts`; `query` adds the model's retrieval instruction, if it has one."""
        tok = self.tokenize(texts, query=query)
        out = np.empty((len(tok.lengths), self.dims), dtype=np.float32)
        for rows in self.plan(tok.lengths):
            out[rows] = self.run_rows(tok, rows)
        return self.finish(tok, out)


def to_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-vector INT8: v ~= q * scale, scale = max|v| / 127 (the seed's compact form)."""
    scales = np.abs(vectors).max(axis=1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(vectors / safe[:, None]), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def to_fp16(vectors: np.ndarray) -> np.ndarray:
    return vectors.astype(np.float16)
