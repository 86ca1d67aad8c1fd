"""The BGE-shaped stand-ins have the real models' parameter counts and input/output signatures
(so a real Hub file is a drop-in for the same code path). The full-size bge-base and
reranker builds (436 MB, 1.1 GB) run only with EMBEDDER_BIG_TESTS=1; each is also checked
structurally, cheaply: per-layer and embedding counts from 1- and 2-layer builds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from embedder.catalog import SHAPES
from embedder.encoder import TextEncoder
from embedder.prepare.bert_onnx import make_bert_model
from embedder.prepare.shapes import (
    SHAPES as ARCHS,
)
from embedder.prepare.shapes import (
    Shape,
    build_shape,
    make_shape_model,
    parameter_count,
    random_weights,
    with_layers,
)
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer
from tests.models import tokenizer_json

big = pytest.mark.skipif(
    not os.environ.get("EMBEDDER_BIG_TESTS"), reason="set EMBEDDER_BIG_TESTS=1 (GB-sized builds)"
)
SMALL_VOCAB = 1000


def _session(model: onnx.ModelProto, tmp: Path) -> object:
    path = tmp / "m.onnx"
    onnx.save(model, str(path))
    return open_session(path, SessionConfig(threads=1))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_layer_and_embedding_counts_add_up_to_the_real_model(name: str) -> None:
    shape = ARCHS[name]
    h = shape.config.hidden_size
    one = parameter_count(make_shape_model(with_layers(shape, 1, SMALL_VOCAB)))
    two = parameter_count(make_shape_model(with_layers(shape, 2, SMALL_VOCAB)))
    per_layer = two - one
    inter = shape.config.intermediate_size
    assert per_layer == 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h
    rest = one - per_layer + (shape.vocab_size - SMALL_VOCAB) * h  # embeddings + head, full vocab
    assert rest + shape.config.num_layers * per_layer == shape.params


def _signature(session: object) -> tuple[dict[str, list[object]], dict[str, list[object]]]:
    ins = {i.name: list(i.shape) for i in session.get_inputs()}  # type: ignore[attr-defined]
    outs = {o.name: list(o.shape) for o in session.get_outputs()}  # type: ignore[attr-defined]
    return ins, outs


@pytest.mark.parametrize("name", ["bge-small", "bge-base"])
def test_bge_signature(name: str, tmp_path: Path) -> None:
    """What the Hub export of BertModel takes and gives (plus the pooler it carries)."""
    shape = with_layers(ARCHS[name], 1, SMALL_VOCAB)
    ins, outs = _signature(_session(make_shape_model(shape), tmp_path))
    h = shape.config.hidden_size
    seq = ["batch", "sequence"]
    assert ins == {"input_ids": seq, "attention_mask": seq, "token_type_ids": seq}
    assert outs == {"last_hidden_state": [*seq, h], "pooler_output": ["batch", h]}


def test_reranker_signature_and_roberta_positions(tmp_path: Path) -> None:
    """XLM-R: input_ids and attention_mask only, one logit per pair; positions count real
    tokens from padding_idx + 1 (pads sit at padding_idx), so row 0 of the position table is
    never read (NaN there changes nothing) and 512 real tokens fit the 514 rows."""
    shape = with_layers(ARCHS["bge-reranker-base"], 1, SMALL_VOCAB)
    weights = random_weights(shape)
    weights["embeddings.position_embeddings.weight"][0] = np.nan  # never read
    weights["embeddings.position_embeddings.weight"][1] = 1e3  # pads only (masked)
    session = _session(make_bert_model(weights, shape.config, shape.head), tmp_path)
    ins, outs = _signature(session)
    assert ins == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    assert outs == {"logits": ["batch", 1]}
    ids = np.random.default_rng(1).integers(5, SMALL_VOCAB, size=(2, 512)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 40:] = 0  # a short row padded to the long one
    (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
    assert logits.shape == (2, 1) and np.isfinite(logits).all()
    (alone,) = session.run(  # type: ignore[attr-defined]
        ["logits"], {"input_ids": ids[1:, :40], "attention_mask": mask[1:, :40]}
    )
    assert alone[0, 0] == pytest.approx(logits[1, 0], abs=1e-5)


def test_same_seed_same_weights() -> None:
    shape = with_layers(ARCHS["bge-small"], 1, SMALL_VOCAB)
    a, b = random_weights(shape, seed=3), random_weights(shape, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _full(name: str, tmp_path: Path) -> tuple[Shape, Path]:
    path = tmp_path / f"{name}.onnx"
    build_shape(name, path)
    return ARCHS[name], path


def test_bge_small_stand_in_full_size(models_root: Path) -> None:
    """Built through the store from the `shapes` catalog, as a service would: the real
    parameter count, and it embeds (CLS-pooled unit vectors of 384 dims)."""
    store = ModelStore(models_root, SHAPES, offline=True)
    spec = SHAPES.get("bge-small-q2-shape")
    store.ensure(spec)
    path = store.path(spec, "model.onnx")
    assert parameter_count(onnx.load(str(path))) == ARCHS["bge-small"].params == 33_360_000
    session = open_session(path, SessionConfig(threads=1))
    embedder = TextEncoder(spec, session, load_tokenizer(tokenizer_json(), spec.max_tokens))
    out = embedder.embed(["a short text", "another text, a little longer " * 60])
    assert out.vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.tokens[1] == spec.max_tokens


@big
@pytest.mark.slow
@pytest.mark.parametrize("name", ["bge-base", "bge-reranker-base"])
def test_big_stand_ins_full_size(name: str, tmp_path: Path) -> None:
    shape, path = _full(name, tmp_path)
    assert parameter_count(onnx.load(str(path))) == shape.params
    ins, outs = _signature(open_session(path, SessionConfig(threads=1)))
    assert "input_ids" in ins and ("logits" in outs or "last_hidden_state" in outs)


@big
@pytest.mark.slow
@pytest.mark.parametrize("model", ["bge-small-q1-shape", "bge-base-q3-shape"])
def test_int8_levels_build_with_the_projects_recipe(model: str, models_root: Path) -> None:
    store = ModelStore(models_root, SHAPES, offline=True)
    spec = SHAPES.get(model)
    store.ensure(spec)
    graph = onnx.load(str(store.path(spec, "model_int8.onnx")))
    assert any(n.op_type == "MatMulIntegerToFloat" for n in graph.graph.node)
