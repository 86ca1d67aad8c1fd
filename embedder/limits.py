"""Per-request bounds and the checks that enforce them (before any model work starts), and
what a request's texts will cost, estimated before they are tokenised (admission)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from embedder.errors import InvalidInput, NothingToRead, TooLarge
from embedder.planning import text_cost
from embedder.reranker import Doc
from embedder.tokens import CHARS_PER_TOKEN

SPECIAL_TOKENS = 2  # [CLS] ... [SEP], <s> ... </s>: what every text gets besides its own


def estimated_cost(texts: Iterable[object], max_tokens: int, prefix: int = 0) -> float:
    """What `texts` will cost to run (`planning.text_cost` units), from their characters
    alone, so that a request the queue cannot take is refused before the tokenizer spends
    seconds on it. Errs low: a token is taken to be `CHARS_PER_TOKEN` characters, several
    times what real text has, so a request is refused on its estimate only where its tokens
    would refuse it too (a text of spaces aside); long texts reach the model's window all
    the same, which is what makes a request of many long texts costly. `prefix`: characters
    added to every text (a query instruction). The real cost replaces this once known."""
    total = 0.0
    for t in texts:
        chars = prefix + (len(t) if isinstance(t, str) else 0)
        total += text_cost(min(max_tokens, SPECIAL_TOKENS + math.ceil(chars / CHARS_PER_TOKEN)))
    return total


@dataclass(frozen=True)
class RequestLimits:
    """Per-request bounds; the README lists their settings."""

    max_inputs: int = 2048  # what OpenAI allows per embeddings request
    max_input_chars: int = 100_000  # far beyond any model window; bounds tokenizer work
    max_docs: int = 1000
    max_query_chars: int = 20_000

    def texts(self, texts: object, param: str = "input") -> list[str]:
        """A string or a non-empty list of non-empty strings, within the bounds."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list | tuple):
            raise InvalidInput(f"{param} must be a string or a list of strings", param=param)
        if not texts:
            raise InvalidInput(f"{param} must not be empty", param=param)
        if len(texts) > self.max_inputs:
            raise TooLarge(
                f"{param} has {len(texts)} items; the limit is {self.max_inputs}", param=param
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInput(f"{param}[{i}] must be a string", param=param)
            if not t.strip():  # the rest of the rule needs the tokenizer: see `tokens.blank`
                raise NothingToRead(f"{param}[{i}]", param=param, index=i)
            if len(t) > self.max_input_chars:
                raise TooLarge(
                    f"{param}[{i}] has {len(t)} characters; the limit is {self.max_input_chars}",
                    param=param,
                )
        return list(texts)

    def rerank(self, query: object, docs: Sequence[Doc], top_k: object) -> tuple[str, int | None]:
        """The query and top_k, once they and the documents are valid and within bounds."""
        if not isinstance(query, str):
            raise InvalidInput("query must be a string", param="query")
        if not query.strip():
            raise NothingToRead("query", param="query")
        if len(query) > self.max_query_chars:
            raise TooLarge(
                f"query has {len(query)} characters; the limit is {self.max_query_chars}",
                param="query",
            )
        if not docs:
            raise InvalidInput("documents must not be empty", param="documents")
        if len(docs) > self.max_docs:
            raise TooLarge(
                f"{len(docs)} documents; the limit is {self.max_docs}", param="documents"
            )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
            raise InvalidInput("top_k must be a positive integer", param="top_k")
        if top_k is not None and top_k < 1:
            raise InvalidInput("top_k must be a positive integer", param="top_k")
        seen: set[str] = set()
        for i, d in enumerate(docs):
            if not d.text.strip():
                raise NothingToRead(f"documents[{i}]", param="documents", index=i)
            if len(d.text) > self.max_input_chars:
                raise TooLarge(f"documents[{i}] is too long", param="documents")
            if d.id in seen:
                raise InvalidInput(f"duplicate document id {d.id!r}", param="documents")
            seen.add(d.id)
        return query, top_k
