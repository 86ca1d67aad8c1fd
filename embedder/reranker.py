"""(query, document) pairs -> relevance scores, sorted best first.

Two scorers: a real cross-encoder (one logit per pair, e.g. bge-reranker-base), and the
starter catalog's cosine scorer, which is an embedding model's cosine similarity and says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from embedder.batcher import Inline, Reservation, Runner
from embedder.catalog import ModelSpec
from embedder.encoder import Embedding, check_finite
from embedder.errors import ModelUnavailable, NothingToRead
from embedder.planning import RunLimits, plan, session_limits
from embedder.tokens import (
    Tokenized,
    assemble,
    blank_second,
    encode_all,
    encode_pairs,
    graph_inputs,
    head,
    pick_output,
)


@dataclass(frozen=True)
class Doc:
    id: str
    text: str


@dataclass(frozen=True)
class Ranked:
    id: str
    index: int  # position in the caller's list
    score: float


@dataclass(frozen=True)
class Ranking:
    results: list[Ranked]
    tokens: int


class Reranker(Protocol):
    spec: ModelSpec

    def rerank(
        self,
        query: str,
        docs: Sequence[Doc],
        *,
        top_k: int | None = None,
        raw: bool = False,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> Ranking:
        """Best first; `cancelled` and `reserved` (queue space the caller holds for these
        pairs, see `Batcher.reserve`) as in `Runner.run`."""
        ...


def rank(docs: Sequence[Doc], scores: np.ndarray, top_k: int | None) -> list[Ranked]:
    """Best first; ties keep the caller's order."""
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [Ranked(id=docs[i].id, index=int(i), score=float(scores[i])) for i in order]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x.astype(np.float64))))


class PairScorer:
    """A cross-encoder as a batcher engine: (query, document) pairs in, one logit per row out.

    Pairs are truncated on the document side only, so the whole query is always seen; a query
    longer than half the window falls back to cutting the longer side first, so it still
    leaves the document room. The tokenizer's post-processor places the special tokens (BERT's
    [CLS] q [SEP] d [SEP], RoBERTa's <s> q </s></s> d </s>) and truncation counts them.
    """

    dims = 1

    def __init__(
        self,
        spec: ModelSpec,
        session: Any,
        tokenizer: Tokenizer,
        tokenizer_longest: Tokenizer,
        limits: RunLimits | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.limits = session_limits(limits or RunLimits(), session, spec.max_tokens)
        self.inputs = graph_inputs(session)
        self.output = pick_output(session, spec.output, rank=2)
        # Copies: the truncation is set here, and the caller's tokenizers (possibly one object
        # given twice) stay as they were.
        self._doc_side = copy.deepcopy(tokenizer)
        self._doc_side.enable_truncation(spec.max_tokens, strategy="only_second")
        self._longest = copy.deepcopy(tokenizer_longest)
        self._longest.enable_truncation(spec.max_tokens, strategy="longest_first")

    def tokenize(self, query: str, docs: Sequence[Doc]) -> Tokenized:
        q_head = head(self._longest, query, self.spec.max_tokens)
        query_len = self._query_len(q_head)
        if query_len <= self.spec.max_tokens // 2 and q_head is not query:
            query_len = self._query_len(query)  # its head fell short of the half
        if query_len == 0:
            raise NothingToRead("query", param="query")
        if query_len <= self.spec.max_tokens // 2:
            texts = [d.text for d in docs]
            tok = self._doc_side
            encodings = encode_pairs(tok, query, texts, self.spec.max_tokens)
        else:  # what longest_first keeps depends on both lengths: no heads
            tok = self._longest
            encodings = encode_all(tok, [(query, d.text) for d in docs], offsets=False)
        empty = blank_second(tok, query, encodings)
        if empty is not None:
            raise NothingToRead(f"documents[{empty}]", param="documents", index=empty)
        return Tokenized(encodings, [len(e.ids) for e in encodings])

    def _query_len(self, query: str) -> int:
        return len(self._longest.encode(query, add_special_tokens=False).ids)

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]:
        """The encoder's planner: sorted by length, cut where padding costs least."""
        return plan(lengths, self.limits, parallel)

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        sub = assemble(tok.encodings, rows, self.inputs, self.limits.shape)
        (out,) = self.session.run([self.output], sub.feeds)
        out = np.asarray(out)[: len(rows)]
        if out.ndim != 2 or out.shape[1] != 1:
            raise ModelUnavailable(f"{self.spec.id}: expected one logit per pair")
        return out


class CrossEncoderReranker:
    """Scores each pair with the model's single logit; sigmoid(logit) unless `raw`. The pairs
    run through `runner`: the model's micro-batcher (concurrent requests share runs and the
    overload bound), or inline for a scorer used on its own (tools and tests)."""

    def __init__(self, scorer: PairScorer, runner: Runner | None = None) -> None:
        self.spec = scorer.spec
        self.scorer = scorer
        self.runner: Runner = runner or Inline(scorer)

    def rerank(
        self,
        query: str,
        docs: Sequence[Doc],
        *,
        top_k: int | None = None,
        raw: bool = False,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> Ranking:
        if not docs:
            return Ranking(results=[], tokens=0)
        tok, out = self.runner.run(
            len(docs),
            lambda: self.scorer.tokenize(query, docs),
            cancelled=cancelled,
            reserved=reserved,
        )
        logits = out[:, 0]
        check_finite(logits, self.spec.id)
        scores = logits.astype(np.float64) if raw else sigmoid(logits)
        return Ranking(results=rank(docs, scores, top_k), tokens=sum(tok.lengths))


class CosineReranker:
    """Cosine similarity of embeddings: a stand-in where no cross-encoder is available.

    Scores are mapped into [0, 1] as (cos + 1) / 2, the range Cohere-style clients expect of
    a relevance score; `raw` gives the cosine itself, in [-1, 1]. Both rank alike.
    """

    def __init__(self, spec: ModelSpec, embedding: Embedding) -> None:
        self.spec = spec
        self.embedding = embedding  # its model's, so rerank and embed share runs and bounds

    def rerank(
        self,
        query: str,
        docs: Sequence[Doc],
        *,
        top_k: int | None = None,
        raw: bool = False,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> Ranking:
        if not docs:
            return Ranking(results=[], tokens=0)
        try:
            texts = [query, *(d.text for d in docs)]
            emb = self.embedding.embed(texts, cancelled=cancelled, reserved=reserved)
        except NothingToRead as exc:  # said of the query and the documents, not of "input"
            if exc.index == 0:
                raise NothingToRead("query", param="query") from None
            i = exc.index - 1
            raise NothingToRead(f"documents[{i}]", param="documents", index=i) from None
        cosines = (emb.vectors[1:] @ emb.vectors[0]).astype(np.float64)
        scores = cosines if raw else np.clip((cosines + 1.0) / 2.0, 0.0, 1.0)
        return Ranking(results=rank(docs, scores, top_k), tokens=emb.total_tokens)
