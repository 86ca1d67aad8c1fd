"""Reading an ONNX file's metadata without its graph (the store checks it at every start)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedder.prepare.metadata import read_metadata


def _model(props: dict[str, str], weights: int = 1000) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(weights, dtype=np.float32).reshape(-1, 1), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weights])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, producer_name="test", doc_string="a doc string")
    model.model_version = 7  # a varint field before the graph
    helper.set_model_props(model, props)
    return model


def test_reads_what_onnx_reads(tmp_path: Path) -> None:
    props = {"hero_embedder.int8_recipe": "2", "é unicode": "välue", "empty": ""}
    path = tmp_path / "m.onnx"
    onnx.save(_model(props, weights=250_000), str(path))  # a 1 MB graph is skipped, not read
    assert read_metadata(path) == props
    loaded = onnx.load(str(path), load_external_data=False)
    assert {p.key: p.value for p in loaded.metadata_props} == props


def test_a_model_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_model({}), str(path))
    assert read_metadata(path) == {}


def test_the_store_reads_a_real_quantized_file(tmp_path: Path) -> None:
    from embedder.prepare.bert_onnx import build_bert_onnx
    from embedder.prepare.quantize import RECIPE, RECIPE_KEY, WEIGHTS_KEY, quantize_model
    from tests.unit.prepare.test_bert_onnx import _tiny_checkpoint

    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32 = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, fp32)
    path = tmp_path / "int8.onnx"
    onnx.save(quantize_model(onnx.load(str(fp32)), signed=False), str(path))
    assert read_metadata(path) == {WEIGHTS_KEY: "uint8", RECIPE_KEY: str(RECIPE)}


def test_an_empty_file_is_a_model_with_nothing_set(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")  # as onnx itself reads it
    assert read_metadata(path) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"not a model at all, just text",
        b"\x00\x01\x02",  # field number 0
        b"\x3a\xff\xff\xff\x7f",  # the graph field claims far more bytes than there are
        b"\x72\x05\x0a\x01",  # the metadata field claims more bytes than there are
        b"\x72\x02\x0a\x05",  # an entry's key claims more bytes than its entry has
        b"\x72\x01\x0a",  # an entry's key without its length
        b"\x72\x01\x08",  # a varint field inside an entry
        b"\x08",  # a varint field without its value
        b"\x09\x00\x00",  # a fixed 64-bit field cut short
        b"\x1b\x00",  # wire type 3 (a group): never in a ModelProto
        b"\x08\x80",  # a varint cut short
    ],
)
def test_garbage_is_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_metadata(path)


def test_a_truncated_model_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_model({"k": "v"}), str(path))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError):
        read_metadata(path)
