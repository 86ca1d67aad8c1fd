"""The MatMulNBits form the benchmark sets beside the recipe: the same function as FP32 within
8-bit weight rounding, every eligible weight MatMul converted (its bias Add folded in), the
rest left, a shared weight coded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder.tools.bench.graphs.nbits import nbits_model
from tests.unit.prepare.test_bert_onnx import _batch, _run, _session
from tests.unit.prepare.test_quantize import _tiny_fp32


def _cosines(a: onnx.ModelProto, b: onnx.ModelProto) -> npt.NDArray[np.float32]:
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    want = _run(_session(a.SerializeToString()), batch)
    got = _run(_session(b.SerializeToString()), batch)
    cos = np.sum(want * got, -1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    return np.asarray(cos[batch["attention_mask"] == 1])


def test_weight_matmuls_become_8_bit_blocks_with_the_same_function(tmp_path: Path) -> None:
    model = _tiny_fp32(tmp_path)
    before = model.SerializeToString()
    converted = nbits_model(model)
    assert model.SerializeToString() == before  # a copy
    onnx.checker.check_model(converted)
    ops = [n.op_type for n in converted.graph.node]
    # 2 layers x (Q, K, V, O, FFN in, FFN out); the score and context products stay MatMul
    assert ops.count("MatMulNBits") == 12 and ops.count("MatMul") == 4
    # every projection's bias is in its kernel (the key and value ones folded away first)
    with_bias = [
        n for n in converted.graph.node if n.op_type == "MatMulNBits" and len(n.input) == 6
    ]
    assert len(with_bias) == 2 * 4  # Q, O, FFN in, FFN out
    assert ops.count("Add") == [n.op_type for n in model.graph.node].count("Add") - 2 * 6
    floats = {i.name for i in converted.graph.initializer if i.data_type == TensorProto.FLOAT}
    assert not any(name.endswith("weight_T") for name in floats)  # no FP32 copy left behind
    assert sum(i.name.endswith("weight_T") for i in model.graph.initializer) == 12
    assert _cosines(model, converted).min() >= 0.999


def test_only_weights_whose_rows_the_block_divides_convert(tmp_path: Path) -> None:
    """Blocks of 64: only the FFN output projections (K = 64) convert; the rest (K = 32) stay."""
    model = _tiny_fp32(tmp_path)
    converted = nbits_model(model, block=64)
    onnx.checker.check_model(converted)
    ops = [n.op_type for n in converted.graph.node]
    assert ops.count("MatMulNBits") == 2 and ops.count("MatMul") == 2 * 5 + 4
    nbits = next(n for n in converted.graph.node if n.op_type == "MatMulNBits")
    k_blocks = next(i for i in converted.graph.initializer if i.name == nbits.input[1]).dims
    assert list(k_blocks) == [32, 1, 64]  # [N, K / block, block]
    assert _cosines(model, converted).min() >= 0.999


def test_a_shared_weight_is_coded_once() -> None:
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", [x, "w"], [f"y{x}"]) for x in ("a", "b")]
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["m", 32]) for x in ("a", "b")]
    outputs = [helper.make_tensor_value_info(f"y{x}", TensorProto.FLOAT, ["m", 8]) for x in "ab"]
    graph = helper.make_graph(nodes, "shared", inputs, outputs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted = nbits_model(model)
    onnx.checker.check_model(converted)
    assert [i.name for i in converted.graph.initializer] == ["w/nbits8", "w/nbits8_scale"]
    feed = {x: rng.standard_normal((3, 32)).astype(np.float32) for x in ("a", "b")}
    want = _session(model.SerializeToString()).run(None, feed)
    got = _session(converted.SerializeToString()).run(None, feed)
    for a, b in zip(want, got, strict=True):  # 8-bit weights and activations: ~1 % off
        np.testing.assert_allclose(b, a, atol=0.03 * np.abs(a).max())
