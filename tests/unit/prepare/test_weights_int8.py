"""The int8-weights form (OpenVINO's INT8 candidate): its structure on any BERT-family graph,
and its fidelity to FP32 on real text as OpenVINO runs it here (on a CPU with integer
dot-product units that includes its dynamic quantization of activations)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from tokenizers import Tokenizer

from embedder.backends.choice import MIN_COSINE_INT8
from embedder.prepare.bert_onnx import build_bert_onnx
from embedder.prepare.weights_int8 import RECIPE, RECIPE_KEY, quantize_weights_int8
from embedder.sessions import SessionConfig
from embedder.tools.corpus import SPECIAL_TEXTS, corpus
from tests.unit.prepare.test_bert_onnx import _run, _session, _tiny_checkpoint, _vectors
from tests.unit.prepare.test_quantize import _nearest, minilm_graphs, tokenizer  # noqa: F401


def tiny_graph(path: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT graph at `path`; another `seed` scales its weights apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        weights, config = _tiny_checkpoint(Path(work), "")
        build_bert_onnx(weights, config, path)
    if seed:
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            if init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
                w = numpy_helper.to_array(init) * np.float32(1 + seed / 100)
                init.CopyFrom(numpy_helper.from_array(w, init.name))
        onnx.save(model, str(path))
    return path


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def test_every_weight_matmul_reads_int8_codes(tmp_path: Path) -> None:
    src = tiny_graph(tmp_path / "fp32.onnx")
    before = onnx.load(str(src))
    count = quantize_weights_int8(src, tmp_path / "int8w.onnx")
    after = onnx.load(str(tmp_path / "int8w.onnx"))
    assert count == len(weight_matmuls(before)) > 0
    assert weight_matmuls(after) == []  # each now reads a DequantizeLinear's output
    decoders = {n.output[0]: n for n in after.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: i for i in after.graph.initializer}
    for node in (n for n in after.graph.node if n.op_type == "MatMul"):
        if node.input[1] in decoders:
            codes, scales = (inits[x] for x in decoders[node.input[1]].input)
            assert codes.data_type == TensorProto.INT8 and len(codes.dims) == 2
            assert list(scales.dims) == [codes.dims[1]]  # one scale per output column
    assert len(decoders) == count
    assert {p.key: p.value for p in after.metadata_props}[RECIPE_KEY] == RECIPE


def test_onnx_runtime_reads_it_and_agrees(tmp_path: Path) -> None:
    src = tiny_graph(tmp_path / "fp32.onnx")
    quantize_weights_int8(src, tmp_path / "int8w.onnx")
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 100, size=(3, 12))
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    want = _run(_session(src), batch)
    got = _run(_session(tmp_path / "int8w.onnx"), batch)
    cos = (want * got).sum(-1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.min() > 0.999


def test_a_graph_without_weight_matmuls_is_refused(tmp_path: Path) -> None:
    src = tiny_graph(tmp_path / "fp32.onnx")
    quantize_weights_int8(src, tmp_path / "once.onnx")
    with pytest.raises(ValueError, match="no MatMul with a constant 2-D FP32 weight"):
        quantize_weights_int8(tmp_path / "once.onnx", tmp_path / "twice.onnx")


@pytest.mark.slow
def test_fidelity_against_fp32_as_openvino_runs_it(
    minilm_graphs: tuple[Path, Path],  # noqa: F811
    tokenizer: Tokenizer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The INT8 levels' rule (min cosine, mean, same nearest neighbour) on real text."""
    pytest.importorskip("openvino")
    from embedder.backends.openvino import open_openvino

    fp32, _ = minilm_graphs
    quantize_weights_int8(fp32, tmp_path / "int8w.onnx")
    session = open_openvino(tmp_path / "int8w.onnx", SessionConfig(threads=2), "int8")
    texts = [*corpus(220, seed=0), *SPECIAL_TEXTS]
    want = _vectors(lambda b: _run(_session(fp32), b), tokenizer, texts, 32)
    got = _vectors(lambda b: session.run(["last_hidden_state"], b)[0], tokenizer, texts, 32)
    cos = np.sum(want * got, axis=1)
    assert cos.min() >= MIN_COSINE_INT8, cos.min()
    assert cos.mean() >= 0.999, cos.mean()
    assert float(np.mean(_nearest(want) == _nearest(got))) >= 0.97
