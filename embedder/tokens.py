"""Tokenizer loading and sub-batch assembly (padding, feeds) shared by the encoder and the
reranker; which rows go together is `planning`'s job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


# Texts far longer than the window are cut to a head before the tokenizer sees them: it
# tokenizes a whole text before truncating, so a body of very long texts cost seconds and
# hundreds of MiB to keep one window each (docs/withstands.md has the figures).
CHARS_PER_TOKEN = 16  # a head's budget per token: far above real text (English ~4-5)


def head(tok: Tokenizer, text: str, max_tokens: int) -> str:
    """`text` up to the start of the last pre-token inside `max_tokens` x CHARS_PER_TOKEN
    characters, so no word is cut (pre-tokenizers split at whitespace and punctuation, and
    decide locally); `text` itself when it is shorter or no boundary is found."""
    budget = max_tokens * CHARS_PER_TOKEN
    if len(text) <= budget or tok.pre_tokenizer is None:
        return text
    pieces = tok.pre_tokenizer.pre_tokenize_str(text[:budget])
    if len(pieces) < 2:
        return text
    return text[: pieces[-1][1][0]]


def encode_all(tok: Tokenizer, inputs: Sequence[Any], *, offsets: bool = True) -> list[Encoding]:
    """`tok.encode_batch(inputs)`: the same ids, type ids, sequence ids, special tokens and
    overflow. One input is encoded by `encode`, in the caller's thread (a batch goes through
    the tokenizer's thread pool machinery and costs more, even for one). Without `offsets`,
    several go through `encode_batch_fast`, whose offsets are all zero: only `_same` reads
    them, for texts cut to their heads."""
    if len(inputs) == 1:
        one = inputs[0]
        return [tok.encode(*one) if isinstance(one, tuple) else tok.encode(one)]
    if offsets:
        return list(tok.encode_batch(inputs))
    return list(tok.encode_batch_fast(inputs))


def encode_texts(tok: Tokenizer, texts: Sequence[str], max_tokens: int) -> list[Encoding]:
    """`tok.encode_batch(texts)`, the same encodings' ids, but long texts tokenized by their
    heads (see `_same`); a head that does not prove itself is done again on the whole text."""
    heads = [head(tok, t, max_tokens) for t in texts]
    cut = [i for i, t in enumerate(texts) if heads[i] is not t]
    encodings = encode_all(tok, heads, offsets=bool(cut))
    _redo(tok, encodings, cut, heads, texts, sequence=0)
    return encodings


def encode_pairs(
    tok: Tokenizer, query: str, docs: Sequence[str], max_tokens: int
) -> list[Encoding]:
    """`tok.encode_batch` of (query, doc) pairs, documents cut to their heads as in
    `encode_texts`: for a tokenizer that truncates the second text only."""
    heads = [head(tok, d, max_tokens) for d in docs]
    cut = [i for i, d in enumerate(docs) if heads[i] is not d]
    encodings = encode_all(tok, [(query, h) for h in heads], offsets=bool(cut))
    _redo(tok, encodings, cut, heads, [(query, d) for d in docs], sequence=1)
    return encodings


def _redo(
    tok: Tokenizer,
    encodings: list[Encoding],
    cut: list[int],
    heads: Sequence[str],
    inputs: Sequence[Any],
    sequence: int,
) -> None:
    if not cut:
        return
    margin = max((len(t.content) for t in tok.get_added_tokens_decoder().values()), default=0)
    again = [i for i in cut if not _same(encodings[i], sequence, len(heads[i]), margin)]
    if again:
        for i, enc in zip(again, encode_all(tok, [inputs[i] for i in again]), strict=True):
            encodings[i] = enc


def _same(enc: Encoding, sequence: int, head_len: int, margin: int) -> bool:
    """Whether a head's encoding is its whole text's. Pre-tokens never span a cut made at a
    pre-token boundary, so the head's tokens are the text's first ones, except where an added
    token (matched before pre-tokenizing, e.g. a literal `</s>`) straddles the cut: hence the
    head must overflow the window, and what it keeps end `margin` (the longest added token)
    characters before the cut."""
    if not enc.overflowing:
        return False
    ends = [e for (_, e), s in zip(enc.offsets, enc.sequence_ids, strict=True) if s == sequence]
    return not ends or max(ends) <= head_len - margin


def blank(
    tok: Tokenizer, texts: Sequence[str], encodings: Sequence[Encoding], bare: int
) -> int | None:
    """The first of `texts` that yields no token of its own, or None: the tokenizer drops all
    of it (control and format characters such as U+0000 and U+200B, lone combining marks),
    and its vector would be the empty sequence's. `encodings` are of `prefix + text`, and
    `bare` is the length of the prefix's own (`len(tok.encode(prefix))`); only one no longer
    than that can be blank, and only those are encoded again."""
    for i, enc in enumerate(encodings):
        if len(enc) <= bare and not tok.encode(texts[i], add_special_tokens=False).ids:
            return i
    return None


def blank_second(tok: Tokenizer, query: str, encodings: Sequence[Encoding]) -> int | None:
    """For (query, document) pairs encoded by `tok`: the first whose document yields no
    token, or None. Only an encoding no longer than the query's with an empty document can
    be one; those are looked at token by token."""
    bare = len(tok.encode(query, ""))
    for i, enc in enumerate(encodings):
        if len(enc) <= bare and 1 not in enc.sequence_ids:
            return i
    return None


@dataclass(frozen=True)
class Tokenized:
    """Texts after the tokenizer: what planning and runs need."""

    encodings: list[Encoding]
    lengths: list[int]  # tokens per text, special tokens included, after truncation

    def __add__(self, other: Tokenized) -> Tokenized:
        return Tokenized(self.encodings + other.encodings, self.lengths + other.lengths)


@dataclass(frozen=True)
class Batch:
    """One padded sub-batch: `rows` are positions in the caller's order. The feeds may have
    more rows than `rows` (a runtime's shape grid): the results' first `len(rows)` are
    theirs; `mask` covers those rows, at the feeds' length."""

    rows: np.ndarray
    feeds: dict[str, np.ndarray]
    mask: np.ndarray


def assemble(
    encodings: Sequence[Encoding],
    rows: np.ndarray,
    input_names: set[str],
    shape: Callable[[int, int], tuple[int, int]] | None = None,
) -> Batch:
    """Pad the chosen encodings to their longest, or to the shape `shape` gives for their
    count and longest (`RunLimits.shape`), and build the feeds the graph declares. Extra
    rows repeat the first (a row of real tokens: one all padding might compute NaN, whose
    check would then see only the rows kept); extra columns are masked padding."""
    chosen = [encodings[i] for i in rows]
    lengths = [len(e) for e in chosen]  # `ids` makes a new list at each use
    count, seq = len(chosen), max(lengths)
    if shape is not None:
        count, seq = shape(count, seq)
    ids = np.zeros((count, seq), dtype=np.int64)
    mask = np.zeros((count, seq), dtype=np.int64)
    for r, (enc, n) in enumerate(zip(chosen, lengths, strict=True)):
        ids[r, :n] = enc.ids
        mask[r, :n] = 1
    available = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:  # only for the graphs that take them
        types = np.zeros((count, seq), dtype=np.int64)
        for r, (enc, n) in enumerate(zip(chosen, lengths, strict=True)):
            types[r, :n] = enc.type_ids
        available["token_type_ids"] = types
    if count > len(chosen):
        for array in available.values():
            array[len(chosen) :] = array[0]
    feeds = {name: available[name] for name in input_names if name in available}
    return Batch(rows=rows, feeds=feeds, mask=mask[: len(chosen)])


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
