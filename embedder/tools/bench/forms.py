"""Other INT8 forms of a level's model, set against its INT8 file in the benchmark.

The INT8 recipe's choices were measured on the CPUs these runs land on; on others (AVX-512
VNNI, AMX) the balance between the integer GEMMs and the element-wise work around them
differs, and so may the best form. So each run also builds, from the same FP32 graph, the
recipe's older opset-17 form, MatMulNBits with 8-bit weight blocks (`graphs.nbits`)
and the file's graph with its attention cores fused (`graphs.attention`), and
times them against the file on one thread: the report says on every CPU whether one pays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from embedder.tools.bench.peaks import _session

log = logging.getLogger(__name__)


def fused_if_same(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(`model` with its attention cores fused, layers fused) if the fused graph is valid,
    runs here and gives the same outputs on a padded batch; else (`model`, 0), the reason
    logged."""
    import onnxruntime as ort

    from embedder.prepare.quantize import calibration_feeds
    from embedder.tools.bench.graphs.attention import fuse_attention

    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    layers, mask = fuse_attention(fused)
    if not layers or mask is None:
        log.info("no attention core to fuse")
        return model, 0
    (feed,) = calibration_feeds(model, ((3, 16),), padded=mask)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    ).run(None, feed)
    try:
        onnx.checker.check_model(fused)
    except onnx.checker.ValidationError as e:
        log.warning("the fused attention is not a valid graph (%s): not fused", e)
        return model, 0
    try:
        session = ort.InferenceSession(
            fused.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        have = session.run(None, feed)
    except Exception as e:  # an ONNX Runtime without the kernel, or a graph it refuses
        log.warning("the fused attention does not run here (%r): not fused", e)
        return model, 0
    if all(_same(a, b, feed[mask]) for a, b in zip(want, have, strict=True)):
        return fused, layers
    log.warning("the fused attention disagrees with the graph: not fused")
    return model, 0


def _same(a: npt.NDArray[Any], b: npt.NDArray[Any], kept: npt.NDArray[Any]) -> bool:
    """Whether two outputs agree: every vector (last axis; of real tokens only where the output
    is per token) within 1e-5 in cosine and 1e-3 in norm. An INT8 graph may round one value
    the other way, which moves a vector by far less than any real difference."""
    if a.shape != b.shape:
        return False
    if not np.issubdtype(a.dtype, np.floating):
        return bool(np.array_equal(a, b))
    if a.ndim >= 3 and a.shape[:2] == kept.shape:
        a, b = a[kept != 0], b[kept != 0]
    x = a.reshape(-1, a.shape[-1] if a.ndim else 1).astype(np.float64)
    y = b.reshape(x.shape).astype(np.float64)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    cos = np.sum(x * y, axis=1) / np.maximum(nx * ny, 1e-30)
    tiny = np.maximum(nx, ny) < 1e-6
    return bool(np.all(tiny | ((cos >= 1 - 1e-5) & (np.abs(nx - ny) <= 1e-3 * nx))))


def _forms(fp32: Path, int8: Path, opset17: bool) -> dict[str, bytes]:
    """The other INT8 forms, by name (see `recipe_forms`)."""
    from embedder.prepare.quantize import quantize_model
    from embedder.tools.bench.graphs.nbits import nbits_model

    source = onnx.load(str(fp32))
    forms = {"nbits8": nbits_model(source).SerializeToString()}
    if opset17:
        forms["opset17"] = quantize_model(source, blocked=False).SerializeToString()
    fused, layers = fused_if_same(onnx.load(str(int8)))
    if layers:
        forms["mha"] = fused.SerializeToString()
    return forms


def recipe_forms(
    fp32: Path, int8: Path, shapes: tuple[tuple[int, int], ...], seconds: float = 4.0
) -> dict[str, Any]:
    """The INT8 file as the store built it against other INT8 forms of the same FP32 graph,
    built here: the recipe's opset-17 form (a Reciprocal and a Mul before each
    QuantizeLinear, a shift Add before GELU outputs; `quantize_model(..., blocked=False)`),
    MatMulNBits with 8-bit weight blocks (`graphs.nbits`) and the file's own graph
    with its attention cores fused into MultiHeadAttention (`fused_if_same`).
    Runs on one thread, in rounds whose order rotates. Per (batch, tokens) of random ids and
    per form: the median over rounds of the form's time / the file's (above 1: the file as
    built is faster). The CPUs where the element-wise work weighs most (VNNI, AMX), and where
    ONNX Runtime has fast 8-bit MatMulNBits kernels, are where these figures matter. (The
    name is older than the other forms; kept for the JSON's readers.) A file that is the
    opset-17 form already is not set against that form; a graph whose attention does not
    fuse, not against the fused one."""
    from embedder.prepare.quantize import calibration_feeds, opset_of

    built = onnx.load(str(int8), load_external_data=False)
    sessions = {"built": _session(str(int8), 1)}
    older = opset_of(built) >= 21  # else the file is the opset-17 form itself
    sessions |= {form: _session(m, 1) for form, m in _forms(fp32, int8, older).items()}
    forms = [name for name in sessions if name != "built"]
    out: dict[str, Any] = {"shapes": []}
    for (batch, tokens), feed in zip(shapes, calibration_feeds(built, shapes), strict=True):
        for sess in sessions.values():
            sess.run(None, feed)
        ratios: dict[str, list[float]] = {form: [] for form in forms}
        order = list(sessions)
        until = time.monotonic() + seconds
        rounds = 0
        while time.monotonic() < until or rounds < 5:
            took: dict[str, float] = {}
            order = order[1:] + order[:1]
            for name in order:
                began = time.perf_counter()
                sessions[name].run(None, feed)
                took[name] = time.perf_counter() - began
            for form in forms:
                ratios[form].append(took[form] / took["built"])
            rounds += 1
        speedup = {form: float(np.median(r)) for form, r in ratios.items()}
        out["shapes"].append({"batch": batch, "tokens": tokens, "rounds": rounds} | speedup)
    return out
