"""An alternative INT8 form, for the benchmark: every weight MatMul as ONNX Runtime's
`com.microsoft.MatMulNBits` with 8-bit weights in blocks along K.

Why it is not the recipe: with accuracy_level 4 the kernel quantizes the activations itself,
per block of `block` channels, inside the GEMM (no QuantizeLinear, row maxima or zero points
in the graph), and it is closer to FP32 than the recipe (all-MiniLM-L6-v2, block 32: min /
mean cosine 0.99883 / 0.99965 against 0.99778 / 0.99918 on 234 texts; the same neighbour for
97.0-98.7 % of texts on four corpora against 96.0-98.3 %), but on an AVX2-only EPYC it ran at
0.69-0.72x FP32 where the recipe runs at 1.38-1.41x (1 thread, 16-text batches). ONNX
Runtime has had 8-bit kernels for AVX-512 VNNI since 1.22; whether they beat the recipe there
is what `make bench` measures (`recipe_forms`). The graph gets the recipe's exact
attention-bias folding first, and each bias Add after a converted MatMul goes into the
kernel's bias input, so the two forms differ in their GEMMs and activation quantization only.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder.prepare.quantize import fold_attention_biases
from embedder.tools.bench.graphs.graph_edit import keep_live

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations inside the kernel (the fast path where there is one)


def _blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' weight layout for an ONNX MatMul weight `w` [K, N]: uint8 codes [N, K /
    block, block] (symmetric, the default zero point 128) and float32 scales [N * K / block]."""
    k, n = w.shape
    blocks = w.T.reshape(n, k // block, block)
    scale = np.abs(blocks).max(axis=2) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128
    return q.astype(np.uint8), scale.reshape(-1)


def nbits_model(
    model: onnx.ModelProto, block: int = BLOCK, accuracy_level: int = ACCURACY_LEVEL
) -> onnx.ModelProto:
    """A copy of the FP32 `model` with each MatMul by a constant 2-D weight whose inner size
    `block` divides as MatMulNBits (8 bits), a bias Add that follows it folded in; other
    MatMuls stay."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fold_attention_biases(out)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in g.output}
    coded: dict[str, tuple[str, str]] = {}  # weight name -> (codes, scales): built once
    nodes: list[onnx.NodeProto] = []
    folded: set[int] = set()  # bias Adds taken into a MatMulNBits
    for node in g.node:
        if id(node) in folded:
            continue
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if (
            weight is None
            or node.domain not in ("", "ai.onnx")
            or weight.data_type != TensorProto.FLOAT
            or len(weight.dims) != 2
            or weight.dims[0] % block
            or node.input[0] in inits
        ):
            nodes.append(node)
            continue
        k, n = weight.dims
        if weight.name not in coded:
            codes, scales = _blocks(numpy_helper.to_array(weight).astype(np.float32), block)
            coded[weight.name] = (f"{weight.name}/nbits8", f"{weight.name}/nbits8_scale")
            g.initializer.extend(
                numpy_helper.from_array(v, name)
                for v, name in zip((codes, scales), coded[weight.name], strict=True)
            )
        inputs, result = [node.input[0], *coded[weight.name]], node.output[0]
        users = consumers[result]
        if len(users) == 1 and users[0].op_type == "Add" and result not in outputs:
            bias = next((b for b in users[0].input if b != result and b in inits), None)
            if bias is not None and tuple(inits[bias].dims) == (n,):
                inputs += ["", "", bias]  # no zero points, no g_idx: then the bias
                result = users[0].output[0]
                folded.add(id(users[0]))
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [result],
                name=f"{node.name or node.output[0]}/nbits8",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        )
    keep_live(out, nodes, [])
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out
