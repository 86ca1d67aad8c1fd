"""The MatMulNBits form the benchmark sets beside the recipe: the same function as FP32 within
8-bit weight rounding, every eligible weight MatMul converted, the rest left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from embedder.prepare.bert_onnx import build_bert_onnx
from embedder.prepare.nbits import nbits_model
from tests.unit.prepare.test_bert_onnx import _batch, _run, _session, _tiny_checkpoint


def _tiny(tmp_path: Path) -> onnx.ModelProto:
    weights, config = _tiny_checkpoint(tmp_path, "")
    out = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, out)
    return onnx.load(str(out))


def test_weight_matmuls_become_8_bit_blocks_with_the_same_function(tmp_path: Path) -> None:
    model = _tiny(tmp_path)
    before = model.SerializeToString()
    converted = nbits_model(model)
    assert model.SerializeToString() == before  # a copy
    onnx.checker.check_model(converted)
    ops = [n.op_type for n in converted.graph.node]
    # 2 layers x (Q, K, V, O, FFN in, FFN out); the score and context products stay MatMul
    assert ops.count("MatMulNBits") == 12 and ops.count("MatMul") == 4
    floats = {i.name for i in converted.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert not any(name.endswith("weight_T") for name in floats)  # no FP32 copy left behind
    assert (
        sum(name.endswith("weight_T") for name in (i.name for i in model.graph.initializer)) == 12
    )
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    want = _run(_session(before), batch)
    got = _run(_session(converted.SerializeToString()), batch)
    real = batch["attention_mask"] == 1
    cos = np.sum(want * got, -1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos[real].min() >= 0.999, cos


def test_a_weight_whose_rows_the_block_does_not_divide_stays(tmp_path: Path) -> None:
    model = _tiny(tmp_path)  # inner sizes 32 and 64
    converted = nbits_model(model, block=24)
    assert "MatMulNBits" not in [n.op_type for n in converted.graph.node]
    assert converted.SerializeToString().count(b"nbits8") == 0
