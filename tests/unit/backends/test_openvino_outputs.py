"""OpenVINO names a graph's outputs as the graph does: an output made by an Identity (the
reranker stand-in's `logits`, after `classifier/out_proj/Add`) has two tensor names there,
and the one OpenVINO happens to report first is not always the graph's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from embedder.sessions import SessionConfig
from embedder.tokens import pick_output

ov = pytest.importorskip("embedder.backends.openvino")
pytest.importorskip("openvino")


def _identity_output(path: Path) -> None:
    """x + w, named `cls/Add_out`, then Identity to the graph output `logits` (a Python
    exporter's usual tail)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    nodes = [
        helper.make_node("Add", ["x", "w"], ["cls/Add_out"]),
        helper.make_node("Identity", ["cls/Add_out"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [logits], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_an_output_after_an_identity_is_found_by_the_graphs_name(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    _identity_output(path)
    session = ov.open_openvino(path, SessionConfig(), "fp32")
    assert "logits" in {o.name for o in session.get_outputs()}
    assert pick_output(session, "logits", rank=2) == "logits"  # what PairScorer asks
    (got,) = session.run(["logits"], {"x": np.ones((2, 4), dtype=np.float32)})
    np.testing.assert_array_equal(got, np.array([[2.0, 3.0, 4.0, 5.0]] * 2, dtype=np.float32))
