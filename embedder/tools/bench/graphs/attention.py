"""Each self-attention core of a BERT-family graph as one ONNX Runtime MultiHeadAttention node:
an INT8 form the benchmark sets beside the recipe (`make bench`, `recipe_forms`).

An exported BERT layer computes its attention as ~14 nodes: the Q/K/V bias Adds, a Reshape and
a Transpose per head split, the score MatMul, its scaling, the additive mask, Softmax, the
context MatMul, a Transpose and a Reshape to merge the heads. `com.microsoft.
MultiHeadAttention` takes the projections as [batch, seq, hidden] and does it in one kernel,
with the biases as its bias input and the text mask as a key padding mask. On the recipe's
INT8 graph of all-MiniLM-L6-v2 that is 82 nodes fewer and the same outputs to the bit, but on
an AVX2-only EPYC (ORT 1.32) its CPU kernel cost about what the nodes cost: 0.985-1.013x over
the bench corpus (1 and 2 threads, MiniLM and the bge-base stand-in), so the recipe does not
fuse. Where the integer GEMMs are fast (VNNI, AMX) the attention's FP32 work and the per-node
overhead weigh more: the bench line says whether it pays there.

The match is strict: every layer must have exactly this shape (whatever the exporter named
the nodes or however it computed the reshape targets), its mask must be made from the mask
input alone by the ops of a text mask (a layer that does not match stays as it is), and none
of a fused layer's inner tensors may be needed elsewhere (else nothing is fused). The
benchmark keeps a fused graph only if it gives the same outputs
(`embedder.tools.bench.forms.fused_if_same`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder.prepare.quantize import opset_of, token_ids_input
from embedder.tools.bench.graphs.graph_edit import all_defined, keep_live

F32 = npt.NDArray[np.float32]
log = logging.getLogger(__name__)
_SPLIT = (0, 2, 1, 3)  # [batch, seq, heads, size] -> [batch, heads, seq, size]
_SPLIT_T = (0, 2, 3, 1)  # the same with the key transposed for the score product


class _Graph:
    """Producers, consumers and constant values of a graph, for the matcher."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.producer = {out: node for node in g.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.inits = {i.name: i for i in g.initializer}
        self.inputs = {i.name: i for i in g.input if i.name not in self.inits}
        self.outputs = {o.name for o in g.output}

    def const(self, name: str) -> npt.NDArray[Any] | None:
        if name in self.inits:
            return np.asarray(numpy_helper.to_array(self.inits[name]))
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and len(node.attribute) == 1:
            value = helper.get_attribute_value(node.attribute[0])
            if isinstance(value, onnx.TensorProto):
                return np.asarray(numpy_helper.to_array(value))
        return None

    def scalar(self, name: str) -> float | None:
        value = self.const(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _perm(node: onnx.NodeProto) -> tuple[int, ...]:
    for a in node.attribute:
        if a.name == "perm":
            return tuple(a.ints)
    return (3, 2, 1, 0)  # none given: the axes reversed (the tensors here are 4-D)


def _scaled(g: _Graph, name: str) -> tuple[str, float]:
    """(tensor before an optional multiplication by a constant, that constant or 1)."""
    mul = g.op(name, "Mul")
    if mul is not None:
        for x, c in (mul.input, reversed(mul.input)):
            value = g.scalar(c)
            if value is not None:
                return x, value
    return name, 1.0


def _heads(g: _Graph, reshape: onnx.NodeProto) -> int | None:
    """The head count a head-split Reshape targets: [*, *, heads, size] as a constant, or as a
    Concat of four parts whose third is a constant (how torch exports `view`)."""
    shape = g.const(reshape.input[1])
    if shape is not None and shape.shape == (4,) and shape[2] > 0 and shape[3] > 0:
        return int(shape[2])
    concat = g.op(reshape.input[1], "Concat")
    if concat is not None and len(concat.input) == 4:
        part = g.const(concat.input[2])
        if part is not None and part.size == 1 and int(part.reshape(-1)[0]) > 0:
            return int(part.reshape(-1)[0])
    return None


def _split(
    g: _Graph, name: str, want: tuple[int, ...]
) -> tuple[str, int, float, onnx.NodeProto] | None:
    """(projection [batch, seq, hidden], heads, constant factor, the head-split Reshape) when
    `name` is that projection split into heads (one Transpose, or two composing to `want`),
    optionally multiplied by a constant."""
    name, factor = _scaled(g, name)
    perm: tuple[int, ...] = (0, 1, 2, 3)
    node = g.op(name, "Transpose")
    while node is not None:
        perm = tuple(_perm(node)[p] for p in perm)
        name = node.input[0]
        node = g.op(name, "Transpose")
    reshape = g.op(name, "Reshape")
    if perm != want or reshape is None:
        return None
    heads = _heads(g, reshape)
    return None if heads is None else (reshape.input[0], heads, factor, reshape)


# What a text mask is made of: element-wise and layout ops on the mask input, scalar constants
# ((1 - mask) * lowest, say); from the index given on, an op's inputs are axes or shapes
_MASK_OPS = {"Unsqueeze": 1, "Squeeze": 1, "Reshape": 1, "Expand": 1, "Cast": 1, "Identity": 1}
_MASK_OPS |= {"Sub": 2, "Mul": 2, "Neg": 1, "Not": 1, "Equal": 2, "Where": 3}


def _mask_input(g: _Graph, name: str) -> str | None:
    """The graph input an additive attention mask is computed from, when it is computed from
    that one input by the ops of a text mask only (a constant tensor term, such as a position
    bias, or a second input makes it something else)."""
    found: set[str] = set()
    todo, seen = [name], set()
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        value = g.const(cur)
        if value is not None:
            if value.size != 1:
                return None
            continue
        if cur in g.inputs:
            found.add(cur)
            continue
        node = g.producer.get(cur)
        if node is None or node.op_type not in _MASK_OPS:
            return None
        todo.extend(i for i in node.input[: _MASK_OPS[node.op_type]] if i)
    return found.pop() if len(found) == 1 else None


@dataclass
class _Core:
    q: str
    k: str
    v: str
    biases: list[F32 | None]
    heads: int
    scale: float
    mask: str
    merge: onnx.NodeProto  # the head-merge Reshape: the fused node takes its place and output
    absorbed: list[onnx.NodeProto]  # bias Adds the fused node takes over
    inner: list[onnx.NodeProto]  # every node from the projections to the merge: must all go


def _bias(
    g: _Graph, name: str, split: onnx.NodeProto | None
) -> tuple[str, F32 | None, onnx.NodeProto | None]:
    """(input, bias, Add node) when `name` is x + b with a constant vector b used by nothing
    but the head split (and shape reads of it); else (name, None, None)."""
    add = g.op(name, "Add")
    if add is None or name in g.outputs:
        return name, None, None
    users = g.consumers[name]
    if not all(u is split or u.op_type == "Shape" for u in users):
        return name, None, None
    for x, b in (add.input, reversed(add.input)):
        value = g.const(b)
        if value is not None and value.ndim == 1 and g.const(x) is None:
            return x, value.astype(np.float32), add
    return name, None, None


def _scores(g: _Graph, add: onnx.NodeProto) -> tuple[onnx.NodeProto, float, str, str] | None:
    """(score MatMul, constant factor on it, mask input, mask tensor) when `add` adds a text
    mask to the scaled products of the queries and keys."""
    for scores_in, mask in (add.input, list(reversed(add.input))):
        scores_in, factor = _scaled(g, scores_in)
        div = g.op(scores_in, "Div")
        if div is not None and (d := g.scalar(div.input[1])):
            scores_in, factor = div.input[0], factor / d
        scores = g.op(scores_in, "MatMul")
        mask_input = _mask_input(g, mask)
        if scores is not None and mask_input is not None:
            return scores, factor, mask_input, mask
    return None


def _inner(g: _Graph, out: str, stops: set[str]) -> list[onnx.NodeProto]:
    """The nodes `out` is computed by back to the tensors in `stops`, through data inputs only
    (a Reshape's target shape is not data)."""
    nodes: dict[int, onnx.NodeProto] = {}
    todo = [out]
    while todo:
        node = g.producer.get(todo.pop())
        if node is None or id(node) in nodes or node.op_type == "Constant":
            continue
        nodes[id(node)] = node
        data = node.input[:1] if node.op_type == "Reshape" else node.input
        todo.extend(i for i in data if i and i not in stops and g.const(i) is None)
    return list(nodes.values())


def _match(g: _Graph, probs: onnx.NodeProto, opset: int) -> _Core | None:
    """The attention core whose Softmax is `probs`, if it has exactly the expected shape."""
    axis = [a.i for a in probs.attribute if a.name == "axis"] or [-1 if opset >= 13 else 1]
    if axis[0] not in (-1, 3):
        return None
    add = g.op(probs.input[0], "Add")
    ctxs = g.consumers[probs.output[0]]
    if add is None or len(ctxs) != 1 or ctxs[0].op_type != "MatMul":
        return None
    found = _scores(g, add)
    if found is None:
        return None
    scores, factor, mask_input, mask_tensor = found
    q = _split(g, scores.input[0], _SPLIT)
    k = _split(g, scores.input[1], _SPLIT_T)
    v = _split(g, ctxs[0].input[1], _SPLIT)
    out = ctxs[0]
    merge_t = g.consumers[out.output[0]]
    if q is None or k is None or v is None or v[2] != 1.0 or len(merge_t) != 1:
        return None
    if merge_t[0].op_type != "Transpose" or tuple(_perm(merge_t[0])) != _SPLIT:
        return None
    users = g.consumers[merge_t[0].output[0]]  # the merge, and shape reads of its input
    merges = [u for u in users if u.op_type != "Shape"]
    if len(merges) != 1 or merges[0].op_type != "Reshape" or not q[1] == k[1] == v[1]:
        return None
    inputs, biases, absorbed = [], [], []
    for name, _, _, split in (q, k, v):
        x, bias, add_node = _bias(g, name, split)
        inputs.append(x)
        biases.append(bias)
        if add_node is not None:
            absorbed.append(add_node)
    q_in, k_in, v_in = inputs
    inner = _inner(g, merges[0].output[0], {q_in, k_in, v_in, mask_tensor})
    return _Core(
        q_in,
        k_in,
        v_in,
        biases=biases,
        heads=q[1],
        scale=factor * q[2] * k[2],
        mask=mask_input,
        merge=merges[0],
        absorbed=absorbed,
        inner=inner,
    )


def fuse_attention(model: onnx.ModelProto) -> tuple[int, str | None]:
    """Fuse every matching attention core of `model` (edited in place): (layers fused, the
    graph input their key padding mask comes from). Nodes left unused are removed. If any
    node of a fused core would still be needed (its output is a graph output or read
    elsewhere), nothing is fused and `model` is left as it was."""
    g = _Graph(model)
    opset = opset_of(model)
    cores = [c for p in g.producer.values() if p.op_type == "Softmax" if (c := _match(g, p, opset))]
    masks = {c.mask for c in cores}
    try:
        ids = token_ids_input(model)[0]
    except ValueError:
        ids = None
    if not cores or len(masks) != 1 or ids in masks:  # a mask made from the ids is not a
        return 0, None  # key padding mask the text's own mask input can stand for
    (mask,) = masks
    width = next((len(b) for c in cores for b in c.biases if b is not None), 0)
    new_inits: list[onnx.TensorProto] = []
    fused: dict[int, onnx.NodeProto] = {}
    absorbed: set[int] = set()
    elem = g.inputs[mask].type.tensor_type.elem_type
    mask_i32 = mask if elem == TensorProto.INT32 else f"{mask}/int32"
    for i, core in enumerate(cores):
        inputs = [core.q, core.k, core.v]
        if any(b is not None for b in core.biases):
            parts = [b if b is not None else np.zeros(width, np.float32) for b in core.biases]
            if any(len(p) != width for p in parts):
                continue  # the projections differ in width: not self-attention as we know it
            name = f"attention/{i}/qkv_bias"
            new_inits.append(numpy_helper.from_array(np.concatenate(parts), name))
            inputs.append(name)
            absorbed.update(id(n) for n in core.absorbed)
        else:
            inputs.append("")
        inputs.append(mask_i32)
        fused[id(core.merge)] = helper.make_node(
            "MultiHeadAttention",
            inputs,
            list(core.merge.output),
            name=f"attention/{i}/MultiHeadAttention",
            domain="com.microsoft",
            num_heads=core.heads,
            scale=float(core.scale),
        )
    if not fused:
        return 0, None
    original = onnx.ModelProto()
    original.CopyFrom(model)
    # shape reads of an absorbed bias Add's output read its input instead (the same shape)
    renamed = {
        n.output[0]: x
        for c in cores
        for n in c.absorbed
        if id(n) in absorbed
        for x in n.input
        if g.const(x) is None
    }
    for node in model.graph.node:
        if node.op_type == "Shape" and node.input[0] in renamed:
            node.input[0] = renamed[node.input[0]]
    nodes: list[onnx.NodeProto] = []
    if mask_i32 != mask:
        nodes.append(helper.make_node("Cast", [mask], [mask_i32], to=TensorProto.INT32))
    for node in model.graph.node:
        if id(node) in fused:
            nodes.append(fused[id(node)])
        elif id(node) not in absorbed:
            nodes.append(node)
    live = keep_live(model, nodes, new_inits)
    gone = {id(n) for c in cores if id(c.merge) in fused for n in c.inner if n is not c.merge}
    if any(id(n) in gone for n in live) or not all_defined(model):
        model.CopyFrom(original)
        return 0, None
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused), mask
