"""Text -> vectors: tokenise, length-sorted sub-batches, run, pool, L2-normalise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from embedder.batcher import Inline, Reservation, Runner
from embedder.catalog import ModelSpec
from embedder.errors import BrokenModel, NothingToRead
from embedder.planning import RunLimits, plan, session_limits
from embedder.tokens import (
    Tokenized,
    assemble,
    blank,
    encode_texts,
    graph_inputs,
    pick_output,
)


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dims], unit length, in the caller's order
    tokens: list[int]  # real tokens per input, special tokens included, after truncation
    truncated: list[bool]

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


# The ufuncs themselves, not the Python wrappers around them (np.linalg.norm, ndarray.sum and
# .all): on the one row of a lone text the wrappers' checks cost more than the arithmetic.
def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of `x` at unit length: np.linalg.norm's own sum of squares, without its checks."""
    norms = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    if how == "cls":
        return np.asarray(hidden[:, 0, :])
    # One batched matrix product (mask row x token states) instead of broadcasting the mask
    # over every state and summing: no [batch, seq, dims] temporary.
    weights = mask.astype(hidden.dtype)
    summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
    counts = np.add.reduce(weights, axis=1, keepdims=True)
    return np.asarray(summed / np.maximum(counts, 1.0))


def check_finite(values: np.ndarray, model: str) -> None:
    """A model whose output holds NaN or Inf has damaged weights (or graph): what it computed
    is no answer, and the caller must not get it as one."""
    if not np.logical_and.reduce(np.isfinite(values), axis=None):
        raise BrokenModel(
            f"model {model} computed NaN or Inf (damaged weights?) and is out of service until "
            f"a restart, which checks its files; `embedder models verify {model}` checks them now",
            param="model",
            model=model,
        )


class Encoder(Protocol):
    """Texts to rows and pooled rows to embeddings, around a runner's runs: a `TextEncoder`."""

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> Tokenized: ...

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings: ...


class TextEncoder:
    """One embedding model's session and tokenizer, and what the catalog says of it: a runner's
    engine (`plan`, `run_rows`) and the steps around the runs (`tokenize`, `finish`).

    Thread-safe: ORT's `run` may be called from several threads at once.
    """

    def __init__(
        self,
        spec: ModelSpec,
        session: Any,
        tokenizer: Tokenizer,
        limits: RunLimits | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.tokenizer = tokenizer
        self.limits = session_limits(limits or RunLimits(), session, spec.max_tokens)
        self.inputs = graph_inputs(session)
        self.output = pick_output(session, spec.output, rank=3)
        self.pooling = spec.pooling or "mean"
        # What a text's prefix alone encodes to, by prefix (`blank` needs it on every call).
        self.bare = {p: len(tokenizer.encode(p)) for p in ("", spec.query_instruction or "")}
        probe = self.session.get_outputs()
        shape = next(o.shape for o in probe if o.name == self.output)
        self.dims = int(shape[-1]) if isinstance(shape[-1], int) else (spec.dims or 0)

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> Tokenized:
        """`query` prepends the model's retrieval-query instruction, if it has one."""
        prefix = (self.spec.query_instruction or "") if query else ""
        encodings = encode_texts(self.tokenizer, [prefix + t for t in texts], self.spec.max_tokens)
        empty = blank(self.tokenizer, texts, encodings, self.bare[prefix])
        if empty is not None:
            raise NothingToRead(f"input[{empty}]", param="input", index=empty)
        return Tokenized(encodings, [len(e) for e in encodings])

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        return plan(lengths, self.limits, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        """Pooled, not yet normalised vectors of `rows`, in one run on this encoder's session."""
        sub = assemble(tok.encodings, rows, self.inputs, self.limits.shape)
        (hidden,) = self.session.run([self.output], sub.feeds)
        return pool(hidden[: len(rows)], sub.mask, self.pooling)

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings:
        """The embeddings of pooled rows; BrokenModel if any value is NaN or Inf."""
        check_finite(pooled, self.spec.id)
        return Embeddings(
            vectors=l2_normalize(pooled),
            tokens=list(tok.lengths),
            truncated=[bool(e.overflowing) for e in tok.encodings],
        )

    def embed(self, texts: Sequence[str], *, query: bool = False) -> Embeddings:
        """In the caller's thread, without a batcher (tools and tests)."""
        return Embedding(self, Inline(self)).embed(texts, query=query)


class Embedding:
    """An embedding model as served: its encoder's steps around its runner's runs. The runner
    is the model's micro-batcher, or `Inline` for an encoder used on its own (`embed`): one
    path either way."""

    def __init__(self, encoder: Encoder, runner: Runner) -> None:
        self.encoder = encoder
        self.runner = runner

    def embed(
        self,
        texts: Sequence[str],
        *,
        query: bool = False,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> Embeddings:
        """Unit vectors for `texts`; `cancelled` and `reserved` as in `Runner.run`."""
        tok, pooled = self.runner.run(
            len(texts),
            lambda: self.encoder.tokenize(texts, query=query),
            cancelled=cancelled,
            reserved=reserved,
        )
        return self.encoder.finish(tok, pooled)


def shorten(vectors: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` components, made unit length again: Matryoshka-style truncation (what
    OpenAI's `dimensions` asks for)."""
    if dims >= vectors.shape[1]:
        return vectors
    return l2_normalize(vectors[:, :dims])


def to_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-vector INT8: v ~= q * scale, scale = max|v| / 127 (the seed's compact form)."""
    scales = np.abs(vectors).max(axis=1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(vectors / safe[:, None]), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def to_fp16(vectors: np.ndarray) -> np.ndarray:
    return vectors.astype(np.float16)
