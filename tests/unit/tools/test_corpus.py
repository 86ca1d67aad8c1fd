"""The self-made corpus: same texts for the same seed, and the promised length mix."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest

from embedder.tools.corpus import LONG, MEDIUM, SHORT, SPECIAL_TEXTS, corpus


def _bucket(text: str) -> tuple[int, int]:
    words = len(text.split())
    return next(b for b in (SHORT, MEDIUM, LONG) if b[0] <= words <= b[1])


def test_deterministic() -> None:
    assert corpus(120, seed=3) == corpus(120, seed=3)
    assert corpus(120, seed=3) != corpus(120, seed=4)
    assert corpus(50) == corpus(50, seed=0)


@pytest.mark.parametrize("n", [200, 1000])
def test_length_mix(n: int) -> None:
    texts = corpus(n, seed=1)
    assert len(texts) == n
    counts = {b: 0 for b in (SHORT, MEDIUM, LONG)}
    for text in texts:
        counts[_bucket(text)] += 1  # every text falls in one of the three ranges
    assert counts == {SHORT: n // 2, MEDIUM: round(n * 0.35), LONG: round(n * 0.15)}


def test_small_sizes() -> None:
    assert corpus(0) == []
    for n in range(1, 8):
        assert len(corpus(n, seed=n)) == n


def test_varied_and_readable() -> None:
    texts = corpus(400, seed=2)
    assert len(set(texts)) >= 0.97 * len(texts)
    assert len({t.split()[0] for t in texts}) >= 40  # many different openings
    for text in texts:
        assert text == text.strip() and "  " not in text
        assert text[0].isupper() or text.startswith("how to")
    shuffled = [_bucket(t) for t in texts[:20]]
    assert len(set(shuffled)) > 1  # the lengths are mixed, not grouped


def test_special_texts_cover_the_hard_cases() -> None:
    def has(pred: Callable[[str], bool]) -> bool:
        return any(any(pred(ch) for ch in text) for text in SPECIAL_TEXTS)

    assert has(lambda c: "\u4e00" <= c <= "\u9fff")  # CJK ideographs
    assert has(lambda c: "\u3040" <= c <= "\u30ff")  # kana
    assert has(lambda c: "\uac00" <= c <= "\ud7af")  # hangul
    assert has(lambda c: ord(c) >= 0x1F300)  # emoji
    assert has(lambda c: unicodedata.bidirectional(c) == "AL")  # Arabic, RTL
    assert has(lambda c: unicodedata.bidirectional(c) == "R")  # Hebrew, RTL
    assert has(lambda c: unicodedata.combining(c) > 0)  # combining marks
    assert any("def " in t and "return" in t for t in SPECIAL_TEXTS)  # code
    assert any(sum(ch.isdigit() for ch in t) > 20 for t in SPECIAL_TEXTS)  # numbers
    assert any(len(t.split()) > 300 for t in SPECIAL_TEXTS)  # past the token limit
