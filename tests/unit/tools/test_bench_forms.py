"""Other INT8 forms set against a level's INT8 file: each built and checked, the fused
attention kept only when it computes the same, the report's line per level."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from embedder.prepare.quantize import quantize_model
from embedder.tools.bench import forms
from embedder.tools.bench.forms import fused_if_same
from tests.unit.prepare.test_bert_onnx import _batch, _run, _session
from tests.unit.prepare.test_quantize import _tiny_fp32


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
    from embedder.tools.bench.graphs import attention

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
    with caplog.at_level("WARNING", logger="embedder.tools.bench.forms"):
        kept, layers = fused_if_same(model)
    assert layers == 0 and kept is model
    assert ("disagrees" if fault == "scale" else "does not run here") in caplog.text


def test_recipe_forms_compare_the_built_file_with_the_other_forms(tmp_path: Path) -> None:
    from embedder.prepare.bert_onnx import build_bert_onnx
    from embedder.prepare.quantize import quantize_int8, quantize_model
    from embedder.tools.bench.markdown_limit import peaks as peaks_section
    from tests.unit.prepare.test_bert_onnx import _tiny_checkpoint

    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    build_bert_onnx(weights, config, fp32)
    quantize_int8(fp32, int8)
    got = forms.recipe_forms(fp32, int8, ((2, 8), (1, 4)), seconds=0.05)
    assert [(s["batch"], s["tokens"]) for s in got["shapes"]] == [(2, 8), (1, 4)]
    assert all(s["rounds"] >= 5 and {"opset17", "nbits8", "mha"} <= set(s) for s in got["shapes"])
    # a file that is the opset-17 form already is set against MatMulNBits only
    older = tmp_path / "older.onnx"
    onnx.save(quantize_model(onnx.load(str(fp32)), blocked=False), str(older))
    alone = forms.recipe_forms(fp32, older, ((1, 4),), seconds=0.05)
    assert [set(s) - {"batch", "tokens", "rounds"} for s in alone["shapes"]] == [{"nbits8", "mha"}]
    levels = [
        {"key": "starter:2", "model": "m", "recipe_forms": got},
        {"key": "starter:9", "model": "o", "recipe_forms": alone},
    ]
    text = "\n".join(peaks_section({"peaks": {"shapes": []}, "levels": levels}))
    three = r"\d\.\d{3}x / \d\.\d{3}x / \d\.\d{3}x \(\d+ rounds\)"
    assert re.search(rf"- starter:2 \(m\): 2 x 8 tokens {three}; 1 x 4 tokens {three}", text)
    two = r"- / \d\.\d{3}x / \d\.\d{3}x \(\d+ rounds\)"
    assert re.search(rf"- starter:9 \(o\): 1 x 4 tokens {two}", text)
