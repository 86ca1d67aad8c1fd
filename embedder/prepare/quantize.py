"""INT8 recipe for BERT-family ONNX encoders: per-token activations, per-channel weights.

Why not `onnxruntime.quantization.quantize_dynamic`: it quantizes each MatMul's activation with
ONE scale for the whole batch tensor. BERT activations have outlier tokens and outlier
channels, so that scale is far too coarse: the nearest neighbour of many texts changes.
Keeping the most sensitive MatMuls in FP32 still misses the fidelity bar and gives up most of
the speed. The alternatives measured are listed in tests/unit/test_quantize.py, their
figures in docs/fidelity.md.

This recipe rewrites every MatMul that has a constant 2-D weight into ONNX Runtime's own
integer kernels, with these changes:

1. Per-token (per-row) dynamic activation scales instead of one per tensor. ORT's
   `com.microsoft.MatMulIntegerToFloat` accepts a per-row A scale shaped [..., 1] and applies
   it after its integer GEMM, so the cost is a row max/min, a multiply and a
   `QuantizeLinear` per distinct input. A side effect: a text's vector no longer depends on
   what else is in its batch (padding rows get their own scales).
2. SmoothQuant-style channel balancing (alpha = 0.5) for two-sided inputs (LayerNorm outputs,
   attention context): x/s times diag(s)W, moving part of the outlier channels' range from the
   activation into the per-channel-quantized weight.
3. One-sided inputs (GELU/ReLU outputs, min >= -0.1 * max) get a constant offset c so the
   whole uint8 range [0, 255] covers [-c, max]; `-c * colsum(W)` is folded into the bias.
4. The attention context's smoothing is folded into the value projection (its weight columns
   and bias), exact because each softmax row sums to one: no runtime Mul for that input.
5. Before any of that, the key and value biases leave the attention (exact, see
   `fold_attention_biases`): two bias Adds fewer per layer, at the same fidelity.
6. Where the graph converts to opset 21 (`_to_opset21`), each row is quantized by ONE
   QuantizeLinear whose scale is a block over the whole row, instead of a Reciprocal, a Mul
   over the activation and a plain QuantizeLinear (a faster step); and
   one-sided inputs take a fixed zero point ONE_SIDED_ZERO_POINT (32) with the row scale
   max(rowmax / 223, c / 32), which the integer kernel takes off exactly: no shift Add on
   the widest tensor (the GELU output) and no bias correction. GELU outputs' row maxima are
   mostly well above the point under which a row gets a coarser scale, so fidelity holds. The
   steps cut are element-wise work: a small gain where the integer GEMMs dominate the run
   (plain AVX2), a larger share on VNNI/AMX CPUs, whose GEMMs are much faster.
7. Weights are int8 where ORT's u8 x s8 kernel is exact (VNNI, AMX, non-x86), else uint8
   with zero point 128 (see `signed_weights_are_exact`: plain AVX2 saturates in int16).
   The file records which (metadata WEIGHTS_KEY) and the recipe's version (RECIPE_KEY):
   `why_rebuild` has the store build it again where it saturates, or when older. Int16-safe
   codes instead (u8 x s8 with narrower activations and weights) are faster than uint8
   weights on plain AVX2, but under the fidelity bar.

Tried and dropped (ORT 1.32; the figures in docs/fidelity.md):
- MatMulIntegerToFloat's own bias input: with a per-row A scale the kernel multiplies the bias
  by that scale too, so the result is wrong.
- MatMulNBits, 8-bit weight blocks (the bench's `graphs.nbits`): higher cosines than this
  recipe, but slower than FP32 on an AVX2-only CPU; `make bench` sets it beside the recipe.
- The attention cores fused into MultiHeadAttention (the bench's `graphs.attention`): no
  faster than this recipe on that CPU; `make bench` sets it beside the recipe too.
- Int8 weights in 7 bits (exact with u8 x s8 on AVX2): a little faster, under the fidelity bar.
- One activation group left in FP32: no group carries much of the error.

Weights are symmetric 8-bit, one scale per output column. The activation statistics that pick
the mode and the smoothing factors come from a built-in calibration run on deterministic
pseudo-random token ids drawn from the graph's own vocabulary size (no tokenizer or text is
needed, so the recipe is the same for any BERT-family export, whatever its node names or
pooling). Random ids reproduce BERT's systematic outlier channels well: smoothing computed
from them scored the same as smoothing computed from real text in our measurements.
"""

from __future__ import annotations

import logging
import platform
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder.prepare import Stale
from embedder.prepare.metadata import read_metadata

ALPHA = 0.5  # SmoothQuant migration strength; 0.4-0.6 measured equally well, 0.3 or 0.8 worse
ONE_SIDED = 0.1  # an input whose calibrated min >= -ONE_SIDED * max is quantized unsigned
# Its fixed zero point: rows whose max is under (255 - Z) c / Z (~1.2 for GELU's c = 0.17)
# get a coarser scale than 255 levels over [-c, max] would give (docs/fidelity.md: few do).
ONE_SIDED_ZERO_POINT = 32
CALIBRATION_SEED = 0
# (batch, tokens), shortest first: a model with a shorter position table stops early
CALIBRATION_SHAPES = ((8, 8), (8, 16), (8, 32), (8, 64), (8, 128))
_TINY = np.float32(1e-12)

F32 = npt.NDArray[np.float32]
log = logging.getLogger(__name__)


@dataclass
class _Stats:
    """Calibrated statistics of one MatMul input tensor."""

    absmax: F32  # per channel (last axis)
    lo: float
    hi: float


def _const_weights(model: onnx.ModelProto, names: set[str]) -> dict[str, F32]:
    """The named initializers (the MatMul weights to quantize) as float32 arrays."""
    return {
        init.name: numpy_helper.to_array(init).astype(np.float32)
        for init in model.graph.initializer
        if init.name in names
    }


def _weight_groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """MatMuls with a constant 2-D weight, grouped by their activation input (Q/K/V share one)."""
    weight_names = {
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.FLOAT and len(i.dims) == 2
    }
    groups: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        if (
            node.op_type == "MatMul"
            and node.domain in ("", "ai.onnx")
            and node.input[1] in weight_names
            and node.input[0] not in weight_names
        ):
            groups[node.input[0]].append(node)
    return dict(groups)


def token_ids_input(model: onnx.ModelProto) -> tuple[str, int]:
    """(name, vocabulary size) of the token ids input: the graph input that a Gather uses to
    index the largest 2-D initializer (the word embeddings)."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - set(inits)
    ids_name, vocab = None, 0
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] in inputs and node.input[0] in inits:
            rows = inits[node.input[0]][0]
            if len(inits[node.input[0]]) == 2 and rows > vocab:
                ids_name, vocab = node.input[1], rows
    if ids_name is None:
        raise ValueError("cannot find the token ids input (no Gather on an embedding table)")
    return ids_name, vocab


def calibration_feeds(
    model: onnx.ModelProto,
    shapes: tuple[tuple[int, int], ...] = CALIBRATION_SHAPES,
    padded: str | None = None,
) -> list[dict[str, npt.NDArray[Any]]]:
    """Deterministic batches of random token ids, sized from the graph's own vocabulary
    (`token_ids_input`); masks are all ones, token types zeros, positions 0..n-1. `padded`
    names the mask input to pad instead: row i keeps its first n / (i + 1) tokens."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - inits
    ids_name, vocab = token_ids_input(model)
    rng = np.random.default_rng(CALIBRATION_SEED)
    feeds = []
    for batch, tokens in shapes:
        feed: dict[str, npt.NDArray[Any]] = {}
        for inp in model.graph.input:
            if inp.name not in inputs:
                continue
            elem = inp.type.tensor_type.elem_type
            dtype = {TensorProto.INT32: np.int32, TensorProto.FLOAT: np.float32}.get(elem, np.int64)
            name = inp.name.lower()
            if inp.name == ids_name:
                feed[inp.name] = rng.integers(0, vocab, size=(batch, tokens)).astype(dtype)
            elif inp.name == padded:
                kept = np.arange(tokens)[None, :] < (tokens // np.arange(1, batch + 1))[:, None]
                feed[inp.name] = kept.astype(dtype)
            elif "mask" in name:
                feed[inp.name] = np.ones((batch, tokens), dtype)
            elif "position" in name:
                feed[inp.name] = np.tile(np.arange(tokens, dtype=dtype), (batch, 1))
            else:
                feed[inp.name] = np.zeros((batch, tokens), dtype)
        feeds.append(feed)
    return feeds


def _calibrate(model: onnx.ModelProto, tensors: list[str]) -> dict[str, _Stats]:
    """Run the FP32 model on the calibration batches, recording each tensor's ranges."""
    import onnxruntime as ort

    probe = _copy(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # an over-long calibration batch is expected, not an error
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    stats: dict[str, _Stats] = {}
    for feed in calibration_feeds(model):
        try:
            values = session.run(tensors, feed)
        except Exception:  # e.g. longer than the model's position table: use what fits
            if stats:
                break
            raise
        for name, value in zip(tensors, values, strict=True):
            flat = np.asarray(value, np.float32).reshape(-1, value.shape[-1])
            absmax = np.abs(flat).max(axis=0)
            lo, hi = float(flat.min()), float(flat.max())
            if name in stats:
                old = stats[name]
                absmax = np.maximum(old.absmax, absmax)
                lo, hi = min(old.lo, lo), max(old.hi, hi)
            stats[name] = _Stats(absmax, lo, hi)
    return stats


WEIGHTS_KEY = "hero_embedder.int8_weights"  # metadata: "int8" or "uint8" (see below)
RECIPE_KEY = "hero_embedder.int8_recipe"  # metadata: RECIPE of the code that wrote the file
# Raised whenever the graph this module writes changes, so that the store builds older files
# again (`why_rebuild`). 2: key and value biases folded out of the attention (unversioned
# files are older than that). 3: opset 21, blocked QuantizeLinear, fixed one-sided zero point.
RECIPE = 3
# x86 instructions that multiply u8 x s8 without an int16 intermediate (MLAS uses them when present)
_EXACT_U8S8 = ("avx512_vnni", "avx_vnni", "amx_int8")


def signed_weights_are_exact(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ORT's u8 x s8 kernel is exact on this CPU.

    Without VNNI/AMX, MLAS's x86 u8 x s8 kernel (AVX2 `vpmaddubsw`) adds pairs of products in
    int16 and saturates: 255 x 127 x 2 > 32767, which takes the recipe under the fidelity
    bar on such a CPU (docs/fidelity.md). Unsigned weights
    (zero point 128) take MLAS's u8 x u8 kernel, which widens to int16 first: exact, slower.
    Non-x86 CPUs (NEON dot products) are taken as exact."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(set(line.partition(":")[2].split()) & set(_EXACT_U8S8))
    return False


def _quantize_columns(
    w: F32, signed: bool
) -> tuple[npt.NDArray[Any], F32, npt.NDArray[np.uint8] | None]:
    """Symmetric 8-bit with one scale per output column (ONNX MatMul weights are [in, out]);
    stored as int8, or as uint8 with zero point 128 (same values) where u8 x s8 saturates."""
    scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127)
    if not signed:
        return (q + 128).astype(np.uint8), scale, np.array(128, np.uint8)
    return q.astype(np.int8), scale, None


def _smoothing(stats: _Stats, ws: list[F32]) -> F32 | None:
    """SmoothQuant factors per input channel, or None for a one-sided input (offset instead)."""
    if stats.lo >= -ONE_SIDED * max(stats.hi, 0.0):
        return None
    wmax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
    return np.asarray(
        np.maximum(stats.absmax, _TINY) ** ALPHA / np.maximum(wmax, _TINY) ** (1.0 - ALPHA),
        np.float32,
    )


def _through(producers: dict[str, onnx.NodeProto], name: str) -> onnx.NodeProto | None:
    """The first producer of `name` that is not a Reshape or Transpose (layout-only ops)."""
    node = producers.get(name)
    while node is not None and node.op_type in ("Reshape", "Transpose"):
        node = producers.get(node.input[0])
    return node


def _linear(
    producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto], name: str
) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(Add, MatMul, bias) when `name` comes (through layout ops) from MatMul(x, W) + b."""
    add = _through(producers, name)
    if add is None or add.op_type != "Add":
        return None
    for mm_out, bias in (add.input, reversed(add.input)):
        mm, init = producers.get(mm_out), inits.get(bias)
        weighted = mm is not None and mm.op_type == "MatMul" and mm.input[1] in inits
        if weighted and init is not None and len(init.dims) == 1:
            assert mm is not None
            return add, mm, bias
    return None


def _value_projection(
    model: onnx.ModelProto, x: str, weights: set[str]
) -> tuple[str, str | None] | None:
    """(weight, bias) of the value projection when `x` is an attention context, else None.

    context = probs @ V and each probs row sums to one, so dividing V's output channels (its
    weight columns and bias) by s divides the context by s: the smoothing costs nothing at
    run time (V is quantized per column, so its scaled columns lose nothing either)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = {i.name: i for i in model.graph.initializer}
    ctx = _through(producers, x)
    if ctx is None or ctx.op_type != "MatMul" or ctx.input[1] in weights:
        return None
    probs = _through(producers, ctx.input[0])
    value = _through(producers, ctx.input[1])
    if probs is None or probs.op_type != "Softmax" or value is None:
        return None
    if value.op_type == "MatMul" and value.input[1] in weights:
        return value.input[1], None  # its bias was folded away (`fold_attention_biases`)
    found = _linear(producers, inits, ctx.input[1])
    if found is None or found[1].input[1] not in weights:
        return None
    return found[1].input[1], found[2]


def fold_attention_biases(model: onnx.ModelProto) -> int:
    """Take the key and value biases out of every attention (exact; edits `model`).

    A key bias adds q.b to every score of a query row: softmax over the row ignores it, so it
    goes. Each softmax row sums to one, so a value bias passes to the context unchanged and
    reaches the output projection as b_v W_o: it moves into that projection's bias. Two bias
    Adds fewer per layer, on full activation tensors. Returns the layers folded."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    inits = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    drop: set[int] = set()
    bypass: dict[str, str] = {}

    def sole_use(name: str) -> bool:
        return len(consumers[name]) == 1 and name not in outputs

    def scalar(name: str) -> bool:
        const = inits.get(name)
        if const is None and (node := producers.get(name)) is not None:
            if node.op_type == "Constant" and node.attribute:
                return int(np.prod(helper.get_attribute_value(node.attribute[0]).dims)) == 1
            return False
        return const is not None and int(np.prod(const.dims)) == 1

    opset = opset_of(model)
    folded = 0
    for probs in [n for n in model.graph.node if n.op_type == "Softmax"]:
        axes = [a.i for a in probs.attribute if a.name == "axis"] or [-1 if opset >= 13 else 1]
        if axes[0] not in (-1, 3):
            continue  # not over the key axis of [batch, heads, query, key]
        scores = producers.get(probs.input[0])
        # an additive mask (any), a scaling by a constant: neither undoes the invariance
        while scores is not None and (
            scores.op_type == "Add"
            or (scores.op_type in ("Div", "Mul") and scalar(scores.input[1]))
        ):
            scores = producers.get(scores.input[0])
        ctxs = consumers[probs.output[0]]
        if scores is None or scores.op_type != "MatMul" or len(ctxs) != 1:
            continue
        key = _linear(producers, inits, scores.input[1])
        value = _linear(producers, inits, ctxs[0].input[1])
        out = ctxs[0]
        while out is not None and len(consumers[out.output[0]]) == 1:
            out = consumers[out.output[0]][0]
            if out.op_type not in ("Reshape", "Transpose"):
                break
        o_add = consumers[out.output[0]] if out is not None and out.op_type == "MatMul" else []
        o_bias = _linear(producers, inits, o_add[0].output[0]) if len(o_add) == 1 else None
        if key is None or value is None or o_bias is None or o_bias[1] is not out:
            continue
        k_add, k_mm, k_bias = key
        v_add, v_mm, v_bias = value
        w_o = numpy_helper.to_array(inits[out.input[1]]).astype(np.float64)
        if not all(sole_use(n.output[0]) for n in (k_mm, v_mm, k_add, v_add)):
            continue
        if len({k_bias, v_bias, o_bias[2]}) != 3 or len(consumers[o_bias[2]]) != 1:
            continue
        b_v = numpy_helper.to_array(inits[v_bias]).astype(np.float64)
        b_o = numpy_helper.to_array(inits[o_bias[2]]).astype(np.float64)
        if w_o.shape[0] != b_v.shape[0]:
            continue
        inits[o_bias[2]].CopyFrom(
            numpy_helper.from_array((b_o + b_v @ w_o).astype(np.float32), o_bias[2])
        )
        for add, mm in ((k_add, k_mm), (v_add, v_mm)):
            drop.add(id(add))
            bypass[add.output[0]] = mm.output[0]
        folded += 1
    if folded:
        kept = [n for n in model.graph.node if id(n) not in drop]
        for node in kept:
            for i, name in enumerate(node.input):
                if name in bypass:
                    node.input[i] = bypass[name]
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return folded


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (13 when it names none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _to_opset21(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` at opset 21, whose QuantizeLinear takes a scale per block of a row: one
    block over the whole row quantizes with the per-row scale directly, instead of a
    Reciprocal and a Mul over the activation first. None where the graph does not convert.

    The converter records every tensor's shape; with them ORT fuses the residual Adds and
    LayerNorms into SkipLayerNormalization, measured slower on the INT8 graph (as was an
    earlier fusion of our own), so the shapes go again: ORT sees the graph it saw."""
    if opset_of(model) >= 21:
        return _copy(model)
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, 21)
        del converted.graph.value_info[:]
        converted.ir_version = max(converted.ir_version, 10)  # opset 21 needs IR 10
        onnx.checker.check_model(converted)
    except Exception as e:  # an op the converter does not know: the opset-17 form still works
        log.warning("INT8 recipe: the graph does not convert to opset 21 (%r): opset-17 form", e)
        return None
    return converted


class _Rewriter:
    """Builds the replacement nodes and initializers, with unique names."""

    def __init__(self, model: onnx.ModelProto, blocked: bool) -> None:
        self.model = model
        self.opset = opset_of(model)
        # QuantizeLinear takes a per-row scale (see _to_opset21)
        self.blocked = blocked and self.opset >= 21
        self.new_inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"int8/{self.count}/{base}"

    def const(self, base: str, value: npt.NDArray[Any]) -> str:
        name = self.name(base)
        self.new_inits.append(numpy_helper.from_array(value, name))
        return name

    def node(
        self, op: str, inputs: list[str], base: str, domain: str = "", **attrs: Any
    ) -> tuple[onnx.NodeProto, str]:
        out = self.name(base)
        return helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs), out

    def reduce(self, op: str, x: str, base: str) -> tuple[onnx.NodeProto, str]:
        """Reduce over the last axis keeping it (axes moved from attribute to input at 18)."""
        if self.opset >= 18:
            axes = self.const("axes", np.array([-1], np.int64))
            return self.node(op, [x, axes], base, keepdims=1)
        return self.node(op, [x], base, axes=[-1], keepdims=1)


def _rewrite_group(
    rw: _Rewriter,
    x: str,
    nodes: list[onnx.NodeProto],
    weights: dict[str, F32],
    stats: _Stats,
    smooth: F32 | None,
    presmoothed: bool,
    signed: bool,
) -> tuple[list[onnx.NodeProto], dict[str, F32]]:
    """Nodes replacing the MatMuls of one input group, and bias corrections by MatMul output.

    `smooth` is the group's SmoothQuant factor (None: one-sided input); `presmoothed` says the
    producer of `x` already divides by it (folded into its weights), so no runtime Mul."""
    new: list[onnx.NodeProto] = []

    def add(made: tuple[onnx.NodeProto, str]) -> str:
        new.append(made[0])
        return made[1]

    def scalar(base: str, value: float) -> str:
        return rw.const(base, np.array(value, np.float32))

    offset = 0.0
    xs = x
    if smooth is None and rw.blocked:
        # x >= -c with a fixed zero point Z: scale max(rowmax / (255 - Z), c / Z) keeps -c in
        # range, and the integer kernel takes Z off exactly (no shift Add, no bias correction)
        c = max(-stats.lo, 0.0)
        zero_point = ONE_SIDED_ZERO_POINT if c > 0 else 0
        hi = add(rw.reduce("ReduceMax", x, "rowmax"))
        top = add(rw.node("Mul", [hi, scalar("inv_levels", 1.0 / (255 - zero_point))], "top"))
        floor = max(c / zero_point if zero_point else 0.0, float(_TINY))
        row_scale = add(rw.node("Max", [top, scalar("floor", floor)], "row_scale"))
        smooth = np.ones_like(stats.absmax)
    elif smooth is None:
        # x >= -c: quantize x + c on [0, 255]; y = (x + c) W - c colsum(W)
        offset = max(-stats.lo, 0.0)
        if offset > 0:
            xs = add(rw.node("Add", [x, scalar("offset", offset)], "shift"))
        hi = add(rw.reduce("ReduceMax", xs, "rowmax"))
        amax = add(rw.node("Max", [hi, scalar("tiny", float(_TINY))], "rowmax_pos"))
        row_scale = add(rw.node("Mul", [amax, scalar("inv_levels", 1.0 / 255)], "row_scale"))
        zero_point = 0
        smooth = np.ones_like(stats.absmax)
    else:
        # SmoothQuant: x/s quantized symmetric per row, diag(s) W per column
        if not presmoothed:
            inv = rw.const("inv_smooth", (1.0 / smooth).astype(np.float32))
            xs = add(rw.node("Mul", [x, inv], "s"))
        hi = add(rw.reduce("ReduceMax", xs, "rowmax"))
        lo = add(rw.reduce("ReduceMin", xs, "rowmin"))
        neg = add(rw.node("Neg", [lo], "rowmin_neg"))
        amax = add(rw.node("Max", [hi, neg, scalar("tiny", float(_TINY))], "rowabsmax"))
        row_scale = add(rw.node("Mul", [amax, scalar("inv_levels", 1.0 / 127)], "row_scale"))
        zero_point = 128
    zp_name = rw.const("a_zero_point", np.array(zero_point, np.uint8))
    if rw.blocked:
        # one QuantizeLinear with the row scale as a block over the whole row (opset 21)
        inputs = [xs, row_scale]
        if zero_point:  # a blocked zero point has the scale's shape
            # the zero point as a tensor of the row scale's shape, in one node: quantizing the
            # row scale (positive; finite unless the activations are not) by float32's largest
            # value rounds it to 0 and leaves exactly the zero point. Shape + Expand would be
            # 24 nodes more per run, measurably slower on lone texts.
            huge = scalar("huge", float(np.finfo(np.float32).max))
            inputs.append(add(rw.node("QuantizeLinear", [row_scale, huge, zp_name], "row_zp")))
        width = int(stats.absmax.shape[0])
        q = add(rw.node("QuantizeLinear", inputs, "q", axis=-1, block_size=width))
    else:
        inv_scale = add(rw.node("Reciprocal", [row_scale], "row_inv_scale"))
        scaled = add(rw.node("Mul", [xs, inv_scale], "scaled"))
        q = add(rw.node("QuantizeLinear", [scaled, scalar("unit", 1.0), zp_name], "q"))
    corrections: dict[str, F32] = {}
    for node in nodes:
        w = weights[node.input[1]] * smooth[:, None]
        wq, wscale, wzp = _quantize_columns(w.astype(np.float32), signed)
        inputs = [q, rw.const("w", wq), row_scale, rw.const("w_scale", wscale), zp_name]
        if wzp is not None:
            inputs.append(rw.const("w_zero_point", wzp))
        mm = helper.make_node(
            "MatMulIntegerToFloat",
            inputs,
            list(node.output),
            name=rw.name("matmul"),
            domain="com.microsoft",
        )
        new.append(mm)
        if offset > 0:
            dequantized = (wq.astype(np.float32) - (0 if wzp is None else wzp)) * wscale[None, :]
            corrections[node.output[0]] = (-offset * dequantized.sum(axis=0)).astype(np.float32)
    return new, corrections


def _apply_corrections(
    model: onnx.ModelProto, rw: _Rewriter, nodes: list[onnx.NodeProto], corr: dict[str, F32]
) -> list[onnx.NodeProto]:
    """Fold each bias correction into the bias Add that follows, else add an Add node."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in nodes:
        for name in node.input:
            uses[name] += 1
    for graph_output in model.graph.output:
        uses[graph_output.name] += 1
    pending = dict(corr)
    for node in nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for src, bias in (node.input, reversed(node.input)):
            if src in pending and uses[src] == 1 and bias in inits and uses[bias] == 1:
                value = numpy_helper.to_array(inits[bias]).astype(np.float32)
                if value.shape == pending[src].shape:
                    inits[bias].CopyFrom(numpy_helper.from_array(value + pending.pop(src), bias))
                    break
    result: list[onnx.NodeProto] = []
    for node in nodes:
        result.append(node)
        if node.op_type == "MatMulIntegerToFloat" and node.output[0] in pending:
            # no foldable bias Add: correct right after the MatMul, under the original name
            target = node.output[0]
            raw = rw.name("uncorrected")
            node.output[0] = raw
            value = pending.pop(target)
            result.append(
                helper.make_node(
                    "Add", [raw, rw.const("bias_correction", value)], [target], name=rw.name("fix")
                )
            )
    return result


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    dup = onnx.ModelProto()
    dup.CopyFrom(model)
    return dup


def quantize_model(
    model: onnx.ModelProto, signed: bool | None = None, blocked: bool = True
) -> onnx.ModelProto:
    """The INT8 model for an FP32 `model` (in memory; see the module docstring for the recipe).

    `signed`: int8 weights (None: where this CPU multiplies u8 x s8 exactly), else uint8.
    `blocked`: quantize with opset 21's blocked QuantizeLinear where the graph converts to
    opset 21 (False: the opset-17 form, a Reciprocal and a Mul before a plain one)."""
    if signed is None:
        signed = signed_weights_are_exact()
    converted = _to_opset21(model) if blocked else None
    model = converted if converted is not None else _copy(model)  # folding edits in place
    fold_attention_biases(model)
    groups = _weight_groups(model)
    if not groups:
        raise ValueError("no MatMul with a constant weight to quantize")
    stats = _calibrate(model, sorted(groups))
    weight_names = {n.input[1] for nodes in groups.values() for n in nodes}
    weights = _const_weights(model, weight_names)
    smooth = {
        x: _smoothing(stats[x], [weights[n.input[1]] for n in ns]) for x, ns in groups.items()
    }
    presmoothed: set[str] = set()
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1
    for x, s in smooth.items():
        found = _value_projection(model, x, weight_names) if s is not None else None
        if s is None or found is None:
            continue
        w, b = found
        if uses[w] == 1 and (b is None or uses[b] == 1):
            weights[w] = (weights[w] / s[None, :]).astype(np.float32)
            if b is not None:
                bias = numpy_helper.to_array(inits[b]).astype(np.float32) / s
                inits[b].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), b))
            presmoothed.add(x)
    rw = _Rewriter(model, blocked)
    replacement: dict[int, list[onnx.NodeProto]] = {}  # by id() of the group's first MatMul
    dropped: set[int] = set()
    corrections: dict[str, F32] = {}
    for x, nodes in groups.items():
        new, corr = _rewrite_group(
            rw, x, nodes, weights, stats[x], smooth[x], x in presmoothed, signed
        )
        replacement[id(nodes[0])] = new  # x exists there already, and the weights are constants
        dropped.update(id(n) for n in nodes)
        corrections.update(corr)
    ordered: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in replacement:
            ordered.extend(replacement[id(node)])
        elif id(node) not in dropped:
            ordered.append(node)
    ordered = _apply_corrections(model, rw, ordered, corrections)
    still_used = {name for node in ordered for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in still_used]
    out = _copy(model)
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + rw.new_inits)
    del out.metadata_props[:]
    out.metadata_props.add(key=WEIGHTS_KEY, value="int8" if signed else "uint8")
    out.metadata_props.add(key=RECIPE_KEY, value=str(RECIPE))
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def why_rebuild(path: Path) -> Stale | None:
    """Why the INT8 file at `path`, built by this recipe, must be built again here; None if
    it need not. Files written by a newer recipe are kept (another version of this program
    may share the models root): only older ones go. An unreadable file is not ours to judge
    (loading it says what is wrong); any ONNX file without our metadata counts as older."""
    try:
        props = read_metadata(path)
    except (OSError, ValueError):
        return None
    found = props.get(RECIPE_KEY, "")
    version = int(found) if found.isdecimal() else 0
    if props.get(WEIGHTS_KEY) == "int8" and not signed_weights_are_exact():
        reason = "it was built for another kind of CPU (its int8 weights saturate on this one)"
        return Stale(reason, usable=False)
    if version < RECIPE:
        was = f"version {version}" if version else "an unversioned one"
        reason = f"it was built by an older INT8 recipe ({was}; this one is version {RECIPE})"
        return Stale(reason, usable=True)
    return None


def quantize_int8(src: Path, out: Path) -> None:
    """Write the INT8 version of the FP32 ONNX encoder `src` to `out` (one file)."""
    onnx.save(quantize_model(onnx.load(str(src))), str(out))
