"""The machine's GEMM peaks: real ORT sessions, each thread's failure reaching the caller."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from embedder.tools.bench import peaks


class _Failing:
    def __init__(self, fail_on: int) -> None:
        self.calls, self.fail_on = 0, fail_on

    def run(self, outputs: Any, feeds: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("session broke")


def test_a_failing_session_in_a_thread_reaches_the_caller() -> None:
    """A thread that died silently would leave a low figure that reads as the machine's."""
    with pytest.raises(RuntimeError, match="session broke"):
        peaks._time_runs([_Failing(0), _Failing(3)], None, seconds=0.05)


def test_every_session_runs_at_once_on_a_real_gemm() -> None:
    model = peaks._gemm_model("u8u8", 64, 32)
    sessions = [peaks._session(model, 1) for _ in range(2)]
    a = np.random.default_rng(0).integers(0, 256, (16, 64)).astype(np.uint8)
    runs, took = peaks._time_runs(sessions, a, seconds=0.05)
    assert runs >= 4 and took > 0  # at least two timed runs per session


def test_recipe_forms_compare_the_built_file_with_the_other_forms(tmp_path: Path) -> None:
    from embedder.prepare.bert_onnx import build_bert_onnx
    from embedder.prepare.quantize import quantize_int8, quantize_model
    from embedder.tools.bench.markdown_limit import peaks as peaks_section
    from tests.unit.prepare.test_bert_onnx import _tiny_checkpoint

    weights, config = _tiny_checkpoint(tmp_path, "")
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    build_bert_onnx(weights, config, fp32)
    quantize_int8(fp32, int8)
    got = peaks.recipe_forms(fp32, int8, ((2, 8), (1, 4)), seconds=0.05)
    assert [(s["batch"], s["tokens"]) for s in got["shapes"]] == [(2, 8), (1, 4)]
    assert all(s["rounds"] >= 5 and {"opset17", "nbits8", "mha"} <= set(s) for s in got["shapes"])
    # a file that is the opset-17 form already is set against MatMulNBits only
    older = tmp_path / "older.onnx"
    onnx.save(quantize_model(onnx.load(str(fp32)), blocked=False), str(older))
    alone = peaks.recipe_forms(fp32, older, ((1, 4),), seconds=0.05)
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
