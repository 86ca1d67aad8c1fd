"""Long texts are tokenized by their heads (`embedder.tokens.head`): the ids must be exactly
those of the whole text, whatever the text, on the tokenizer kinds the catalogs use: BERT's
WordPiece (BertPreTokenizer), XLM-R's special tokens around it, and a SentencePiece-style
Unigram behind Metaspace (what XLM-R's own tokenizer.json has), trained here on the corpus."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Encoding, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from embedder import tokens
from embedder.tokens import encode_all, encode_pairs, encode_texts, head, load_tokenizer
from embedder.tools.corpus import SPECIAL_TEXTS, corpus
from tests import roberta
from tests.models import tokenizer_json

PIECES = [
    "apple", "river", "Stone", "mÜsic", "café", "naïve", "日本語", "東京", "😀", "a" * 120,
    "</s>", "<s>", "[SEP]", "[CLS]", "<pad>", ",", ".", "!?", "'", "-", "(x)", "42", "3.14",
    " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u200b", "\x07", "e\u0301",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(PIECES), min_size=0, max_size=160).map("".join)


def _unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = list(roberta.SPECIALS)
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(corpus(300, 7), trainer)
    tok.post_processor = roberta.post_processor("roberta")
    return tok


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tokenizer]:
    tmp = tmp_path_factory.mktemp("tok")
    xlmr = load_tokenizer(roberta.build_tokenizer(tmp / "xlmr.json"), 512)
    return {"wordpiece": load_tokenizer(tokenizer_json(), 512), "xlmr-specials": xlmr} | {
        "unigram-metaspace": _unigram()
    }


@contextmanager
def _budget(chars_per_token: int) -> Iterator[None]:
    """Heads after a few characters per token, so short texts are cut too."""
    saved = tokens.CHARS_PER_TOKEN
    tokens.CHARS_PER_TOKEN = chars_per_token
    try:
        yield
    finally:
        tokens.CHARS_PER_TOKEN = saved


def _same(a: list[Encoding], b: list[Encoding]) -> None:
    assert [e.ids for e in a] == [e.ids for e in b]
    assert [bool(e.overflowing) for e in a] == [bool(e.overflowing) for e in b]


def _examples(n: int) -> settings:
    return settings(
        max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


@pytest.mark.parametrize("kind", ["wordpiece", "xlmr-specials", "unigram-metaspace"])
@_examples(150)
@given(
    texts=st.lists(TEXT, min_size=1, max_size=4), window=st.integers(3, 40), cpt=st.integers(1, 4)
)
def test_heads_give_the_whole_texts_ids(
    kinds: dict[str, Tokenizer], kind: str, texts: list[str], window: int, cpt: int
) -> None:
    tok = kinds[kind]
    tok.enable_truncation(window)
    with _budget(cpt):
        _same(encode_texts(tok, texts, window), tok.encode_batch(texts))


@pytest.mark.parametrize("kind", ["wordpiece", "xlmr-specials", "unigram-metaspace"])
@_examples(100)
@given(
    docs=st.lists(TEXT, min_size=1, max_size=4), window=st.integers(16, 48), cpt=st.integers(1, 4)
)
def test_pair_heads_give_the_whole_pairs_ids(
    kinds: dict[str, Tokenizer], kind: str, docs: list[str], window: int, cpt: int
) -> None:
    tok = kinds[kind]
    tok.enable_truncation(window, strategy="only_second")
    query = "apple river"
    with _budget(cpt):
        _same(encode_pairs(tok, query, docs, window), tok.encode_batch([(query, d) for d in docs]))


def test_an_added_token_across_the_cut_is_not_split(kinds: dict[str, Tokenizer]) -> None:
    """`</s>` starting three characters before the budget: the head ends `</` (two
    punctuation pre-tokens), the whole text has one `</s>` there. With a window that keeps
    the `<` and overflows at the `/`, the head's ids would end `<` where the text's end `</s>`;
    the margin (the longest added token) sends such a text to the whole-text path."""
    tok = kinds["xlmr-specials"]
    window, cpt = 7, 2
    budget = window * cpt
    text = "a b c d" + " " * (budget - 3 - len("a b c d")) + "</s> f g h"
    assert text.index("</s>") == budget - 3
    tok.enable_truncation(window)
    with _budget(cpt):
        assert head(tok, text, window).endswith("</")
        alone = tok.encode(head(tok, text, window))
        assert alone.overflowing and alone.ids[-2] != roberta.EOS  # the trap is real
        _same(encode_texts(tok, [text], window), tok.encode_batch([text]))


def test_a_head_short_of_the_window_is_not_used(kinds: dict[str, Tokenizer]) -> None:
    """Whitespace fills the budget: the head holds one word and does not overflow, so the
    words after the run still belong in the window."""
    tok = kinds["wordpiece"]
    window, cpt = 8, 4
    text = "apple" + " " * (window * cpt - 8) + "river stone music"
    tok.enable_truncation(window)
    with _budget(cpt):
        assert head(tok, text, window).strip() == "apple"
        _same(encode_texts(tok, [text], window), tok.encode_batch([text]))


def test_a_huge_text_is_tokenized_by_its_head(kinds: dict[str, Tokenizer]) -> None:
    tok = kinds["wordpiece"]
    tok.enable_truncation(256)
    text = " ".join(corpus(400, 3)) * 10
    assert len(text) > 100_000
    cut = head(tok, text, 256)
    assert len(cut) <= 256 * tokens.CHARS_PER_TOKEN and text.startswith(cut)
    _same(encode_texts(tok, [text], 256), tok.encode_batch([text]))


def test_no_boundary_means_no_head(kinds: dict[str, Tokenizer]) -> None:
    tok = kinds["wordpiece"]
    text = "x" * (512 * tokens.CHARS_PER_TOKEN + 10)  # one word: one [UNK]
    assert head(tok, text, 512) is text


def test_catalog_tokenizers_are_local_pre_tokenizers(tmp_path: Path) -> None:
    """The head rests on pre-tokenizers that split locally; a new tokenizer kind in a catalog
    should be added to the property tests above."""
    kind = type(load_tokenizer(tokenizer_json(), 512).pre_tokenizer).__name__
    assert kind == "BertPreTokenizer"


def _fields(e: Encoding) -> tuple[object, ...]:
    """Everything the service reads of an encoding (offsets aside: `_same` only), and more
    (the overflow's own ids differ where a head was tokenized: whether there is one does not)."""
    return (
        e.ids,
        e.type_ids,
        e.attention_mask,
        e.special_tokens_mask,
        e.sequence_ids,
        len(e),
        bool(e.overflowing),
    )


@pytest.mark.parametrize("kind", ["wordpiece", "xlmr-specials", "unigram-metaspace"])
def test_every_path_gives_encode_batch_s_encodings(kinds: dict[str, Tokenizer], kind: str) -> None:
    """A lone text (`encode`), a batch without cut texts (`encode_batch_fast`) and one with
    (`encode_batch`) give what `encode_batch` gives, on the corpus and its special texts
    (scripts, emoji, code, one letter, a text past the window), alone, in batches and as a
    reranker's pairs."""
    tok = kinds[kind]
    tok.enable_truncation(128)
    texts = [*SPECIAL_TEXTS, *corpus(150, 5)]
    reference = tok.encode_batch(texts)
    for text, ref in zip(texts, reference, strict=True):
        (alone,) = encode_texts(tok, [text], 128)
        assert _fields(alone) == _fields(ref), text
        assert alone.offsets == ref.offsets  # a lone text keeps them
    for size in (2, 7, 32):
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            got = encode_texts(tok, batch, 128)
            assert [_fields(e) for e in got] == [_fields(e) for e in reference[start:][:size]]
    tok.enable_truncation(128, strategy="only_second")
    query = "how do rivers shape the stone of a valley"
    pairs = tok.encode_batch([(query, d) for d in texts])
    for doc, ref in zip(texts, pairs, strict=True):
        assert [_fields(e) for e in encode_pairs(tok, query, [doc], 128)] == [_fields(ref)]
    assert [_fields(e) for e in encode_all(tok, [(query, d) for d in texts], offsets=False)] == [
        _fields(e) for e in pairs
    ]


def test_a_lone_text_is_tokenized_in_the_caller_s_thread() -> None:
    """`encode_batch` of even one text starts the tokenizer's thread pool (and runs through
    its machinery); a lone text's tokenizing does without: a fresh process that tokenizes
    lone texts has no more threads than before."""
    script = f"""
import os
from pathlib import Path
from embedder.tokens import encode_texts, load_tokenizer
tok = load_tokenizer(Path({str(tokenizer_json())!r}), 128)
before = len(os.listdir("/proc/self/task"))
for text in ("one lone text", "another", "a third, longer text of a few more words"):
    encode_texts(tok, [text], 128)
print(before, len(os.listdir("/proc/self/task")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = map(int, done.stdout.split())
    assert after == before, done.stdout
