"""The INT8 form of a BERT-family graph that OpenVINO runs: int8 weights, activations left to
the runtime.

Every MatMul with a constant 2-D FP32 weight reads it through a `DequantizeLinear` of int8
codes, symmetric, one scale per output column (no zero point). OpenVINO's CPU plugin reads
that pattern as compressed weights, and where the CPU has integer dot-product units (VNNI,
AMX) its own dynamic quantization (`DYNAMIC_QUANTIZATION_GROUP_SIZE`) turns each token's
activations into int8 per group of channels at run time, so its matrix products run on those
units. That is the scheme that keeps BERT's outlier tokens and channels apart (the ORT
recipe in `embedder.prepare.quantize` is per token for the same reason); a static,
calibrated activation scale per tensor (NNCF's post-training quantization, or a static QDQ
graph) ruined single texts of MiniLM whatever its options (docs/openvino.md).

ONNX Runtime reads the file too, but turns the weights back into FP32 at load: it is no
candidate there. Weights only, so the file is the same on every CPU; the service builds it
where OpenVINO and the units it needs are present (`embedder.backends.forms`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RECIPE = "int8-weights/1"  # recorded in the file's metadata: a new version builds it again
RECIPE_KEY = "hero_embedder.int8_weights_recipe"


def quantize_weights_int8(src: Path, out: Path) -> int:
    """Write `src` with its weight MatMuls reading int8 codes to `out`; the count of them."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    weights = {
        node.input[1]
        for node in model.graph.node
        if node.op_type == "MatMul"
        and node.domain in ("", "ai.onnx")
        and node.input[1] in inits
        and node.input[0] not in inits
        and inits[node.input[1]].data_type == TensorProto.FLOAT
        and len(inits[node.input[1]].dims) == 2
    }
    if not weights:
        raise ValueError(f"{src.name} has no MatMul with a constant 2-D FP32 weight")
    opset = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset.version < 13:  # DequantizeLinear's per-axis scales
        raise ValueError(f"{src.name} is opset {opset.version if opset else '?'}; 13+ needed")
    decode = []
    for name in sorted(weights):
        codes, scales = _int8_columns(numpy_helper.to_array(inits[name]))
        inits[name].CopyFrom(numpy_helper.from_array(codes, f"{name}.int8"))
        model.graph.initializer.append(numpy_helper.from_array(scales, f"{name}.scale"))
        # The dequantized tensor takes the weight's own name: the MatMuls stay as they are.
        decode.append(
            helper.make_node("DequantizeLinear", [f"{name}.int8", f"{name}.scale"], [name], axis=1)
        )
    # An older exporter lists initializers among the inputs too: the names are outputs now.
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    nodes = [*decode, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    meta = {p.key: p for p in model.metadata_props}
    if RECIPE_KEY in meta:
        meta[RECIPE_KEY].value = RECIPE
    else:
        model.metadata_props.append(onnx.StringStringEntryProto(key=RECIPE_KEY, value=RECIPE))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return len(weights)


def _int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes and a scale per output column (the last axis of a [in, out]
    MatMul weight): an all-zero column gets scale 1 and codes 0."""
    w = np.asarray(weight, dtype=np.float32)
    absmax = np.abs(w).max(axis=0)
    scales = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(w / scales), -127, 127).astype(np.int8)
    return codes, scales
