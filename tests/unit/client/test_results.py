"""What the client's results look like when printed: what they are, not their numbers."""

from __future__ import annotations

import numpy as np

from embedder.client import CompactEmbedResult, EmbedResult


def test_embed_result_repr_names_the_shape_not_the_vectors() -> None:
    vectors = np.full((3, 384), 0.0510204, dtype=np.float32)
    result = EmbedResult("all-minilm-l6-v2", 4, 384, 12, (4, 4, 4), vectors)
    text = repr(result)
    assert text == (
        "EmbedResult(model='all-minilm-l6-v2', quality=4, dims=384, tokens=12, "
        "token_counts=(4, 4, 4), vectors=<3x384 float32>)"
    )
    assert "0.051" not in text and str(result) == text


def test_compact_result_repr_and_long_token_counts() -> None:
    rows = tuple((12, -41, 7) for _ in range(20))
    result = CompactEmbedResult("m", 2, 3, 60, (3,) * 20, "int8", rows, (0.0031,) * 20)
    text = repr(result)
    assert text.endswith(
        "token_counts=(3, 3, 3, 3, 3, 3, 3, 3, ... 20 in all), vectors=<20x3 int8>)"
    )
    assert "-41" not in text and "0.0031" not in text
    assert len(text) < 200
