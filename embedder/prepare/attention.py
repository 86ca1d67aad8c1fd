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

The match is strict (every layer must have exactly this shape, whatever the exporter named the
nodes or however it computed the reshape targets); a layer that does not match stays as it
is, and `fused_if_same` keeps the fused graph only if it gives the same outputs.
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


def _mask_input(g: _Graph, name: str) -> str | None:
    """The graph input an additive attention mask is computed from, if only from one (shape
    reads aside: a mask expanded to the ids' shape is still the text mask)."""
    found: set[str] = set()
    todo, seen = [name], set()
    while todo:
        cur = todo.pop()
        if cur in seen or g.const(cur) is not None:
            continue
        seen.add(cur)
        if cur in g.inputs:
            found.add(cur)
            continue
        node = g.producer.get(cur)
        if node is None:
            return None
        if node.op_type != "Shape":
            todo.extend(i for i in node.input if i)
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


def _bias(g: _Graph, name: str, split: onnx.NodeProto | None) -> tuple[str, F32 | None, Any]:
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


def _scores(g: _Graph, add: onnx.NodeProto) -> tuple[onnx.NodeProto, float, str] | None:
    """(score MatMul, constant factor on it, mask input) when `add` adds a text mask to the
    scaled products of the queries and keys."""
    for scores_in, mask in (add.input, list(reversed(add.input))):
        scores_in, factor = _scaled(g, scores_in)
        div = g.op(scores_in, "Div")
        if div is not None and (d := g.scalar(div.input[1])):
            scores_in, factor = div.input[0], factor / d
        scores = g.op(scores_in, "MatMul")
        mask_input = _mask_input(g, mask)
        if scores is not None and mask_input is not None:
            return scores, factor, mask_input
    return None


def _match(g: _Graph, probs: onnx.NodeProto) -> _Core | None:
    axis = [a.i for a in probs.attribute if a.name == "axis"]
    if axis and axis[0] not in (-1, 3):
        return None
    add = g.op(probs.input[0], "Add")
    ctxs = g.consumers[probs.output[0]]
    if add is None or len(ctxs) != 1 or ctxs[0].op_type != "MatMul":
        return None
    found = _scores(g, add)
    if found is None:
        return None
    scores, factor, mask_input = found
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
    )


def fuse_attention(model: onnx.ModelProto) -> tuple[int, str | None]:
    """Fuse every matching attention core of `model` (edited in place): (layers fused, the
    graph input their key padding mask comes from). Nodes left unused are removed."""
    g = _Graph(model)
    cores = [c for p in g.producer.values() if p.op_type == "Softmax" if (c := _match(g, p))]
    masks = {c.mask for c in cores}
    if not cores or len(masks) != 1:
        return 0, None
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
    if fused and mask_i32 != mask:
        nodes.append(helper.make_node("Cast", [mask], [mask_i32], to=TensorProto.INT32))
    for node in model.graph.node:
        if id(node) in fused:
            nodes.append(fused[id(node)])
        elif id(node) not in absorbed:
            nodes.append(node)
    _keep_live(model, nodes, new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused), mask


def _keep_live(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], new_inits: list[onnx.TensorProto]
) -> None:
    """Set the graph's nodes to `nodes` minus those whose outputs nothing uses any more."""
    wanted = {o.name for o in model.graph.output}
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in wanted for o in node.output):
            live.append(node)
            wanted.update(i for i in node.input if i)
    live.reverse()
    inits = [i for i in [*model.graph.initializer, *new_inits] if i.name in wanted]
    del model.graph.node[:]
    model.graph.node.extend(live)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def fused_if_same(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(`model` with its attention cores fused, layers fused) if the fused graph gives the same
    outputs on a padded batch and runs here; else (`model`, 0), with the reason logged."""
    import onnxruntime as ort

    from embedder.prepare.quantize import calibration_feeds

    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    try:
        layers, mask = fuse_attention(fused)
        if not layers or mask is None:
            log.info("no attention core to fuse")
            return model, 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        got = []
        for graph in (model, fused):
            session = ort.InferenceSession(
                graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            (feed,) = calibration_feeds(graph, ((3, 16),), padded=mask)
            got.append((session.run(None, feed), feed[mask]))
        (want, kept), (have, _) = got
        if all(_same(a, b, kept) for a, b in zip(want, have, strict=True)):
            return fused, layers
        log.warning("the fused attention disagrees with the graph: not fused")
    except Exception as e:  # an ONNX Runtime without the kernel, or a graph it refuses
        log.warning("the fused attention does not run here (%r): not fused", e)
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
