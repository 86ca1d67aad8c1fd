"""An alternative INT8 form, for the benchmark: every weight MatMul as ONNX Runtime's
`com.microsoft.MatMulNBits` with 8-bit weights in blocks along K.

Why it is not the recipe: with accuracy_level 4 the kernel quantizes the activations itself,
per block of `block` channels, inside the GEMM (no QuantizeLinear, row maxima or zero points
in the graph), and its fidelity is better than the recipe's (all-MiniLM-L6-v2, block 32, 234
texts: min / mean cosine / same neighbour 0.99898 / 0.99965 / 98.3 %, against 0.99778 /
0.99918 / 98.3 %), but on an AVX2-only EPYC it ran at 0.72x FP32 where the recipe runs at
1.41x (1 thread, 16-text batches). ONNX Runtime has had 8-bit kernels for AVX-512 VNNI since
1.22; whether they beat the recipe there is what `make bench` measures (`recipe_forms`).
Weights are symmetric per block (zero point 128 in uint8), as the recipe's are per column.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations inside the kernel (the fast path where there is one)


def nbits_model(
    model: onnx.ModelProto, block: int = BLOCK, accuracy_level: int = ACCURACY_LEVEL
) -> onnx.ModelProto:
    """A copy of the FP32 `model` with each MatMul by a constant 2-D weight whose inner size
    `block` divides as MatMulNBits (8 bits); other MatMuls stay."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer if i.data_type == TensorProto.FLOAT}
    nodes, replaced = [], set()
    for node in g.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if (
            weight is None
            or len(weight.dims) != 2
            or weight.dims[0] % block
            or node.input[0] in inits
        ):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)  # [K, N]: y = x @ w
        k, n = w.shape
        blocks = w.T.reshape(n, k // block, block)
        scale = np.abs(blocks).max(axis=2) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128
        q_name, s_name = f"{weight.name}/nbits8", f"{weight.name}/nbits8_scale"
        g.initializer.extend(
            [
                numpy_helper.from_array(q.astype(np.uint8), q_name),
                numpy_helper.from_array(scale.reshape(-1), s_name),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], q_name, s_name],
                list(node.output),
                name=f"{node.name or node.output[0]}/nbits8",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        )
        replaced.add(weight.name)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in g.initializer if i.name not in replaced or i.name in used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out
