"""Tokenizer loading and sub-batch assembly (padding, feeds) shared by the encoder and the
reranker; which rows go together is `planning`'s job."""

from __future__ import annotations

from collections.abc import Sequence
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
class Tokenized:
    """Texts after the tokenizer: what planning and runs need."""

    encodings: list[Encoding]
    lengths: list[int]  # tokens per text, special tokens included, after truncation

    def __add__(self, other: Tokenized) -> Tokenized:
        return Tokenized(self.encodings + other.encodings, self.lengths + other.lengths)


@dataclass(frozen=True)
class Batch:
    """One padded sub-batch: `rows` are positions in the caller's order."""

    rows: np.ndarray
    feeds: dict[str, np.ndarray]
    mask: np.ndarray


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
