"""Sub-batch assembly: the feeds padded to the plan's shape, the mask of the rows kept."""

from __future__ import annotations

import numpy as np
from tokenizers import Encoding, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from embedder.planning import OPENVINO_GRID, RunLimits
from embedder.tokens import assemble

WORDS = {"[UNK]": 1, "a": 5, "b": 6, "c": 7}


def _encodings(*texts: str) -> list[Encoding]:
    tok = Tokenizer(WordLevel(WORDS, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok.encode_batch(list(texts))


def test_without_a_grid_rows_pad_to_their_longest() -> None:
    encs = _encodings("a b c", "b")
    sub = assemble(encs, np.array([1, 0]), {"input_ids", "attention_mask"}, RunLimits().shape)
    assert sub.feeds["input_ids"].tolist() == [[6, 0, 0], [5, 6, 7]]
    assert sub.mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert "token_type_ids" not in sub.feeds  # only what the graph declares


def test_on_a_grid_extra_rows_repeat_the_first_and_extra_columns_are_masked() -> None:
    """Five texts run as six rows of eight tokens: the sixth row is the first again (real
    tokens, never an all-padding row), the mask returned covers the five rows kept."""
    encs = _encodings("a", "a b", "c", "b c a", "b")
    limits = RunLimits(32, 2048, grid=OPENVINO_GRID, window=256)
    names = {"input_ids", "attention_mask", "token_type_ids"}
    sub = assemble(encs, np.arange(5), names, limits.shape)
    ids, mask = sub.feeds["input_ids"], sub.feeds["attention_mask"]
    assert ids.shape == mask.shape == sub.feeds["token_type_ids"].shape == (6, 8)
    assert ids[:, :3].tolist() == [[5, 0, 0], [5, 6, 0], [7, 0, 0], [6, 7, 5], [6, 0, 0], [5, 0, 0]]
    assert not ids[:, 3:].any() and not mask[:, 3:].any()
    assert mask[5].tolist() == mask[0].tolist()
    assert sub.mask.shape == (5, 8) and sub.mask.tolist() == mask[:5].tolist()
