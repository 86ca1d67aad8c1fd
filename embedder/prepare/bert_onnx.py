"""Build an FP32 ONNX graph of a BERT encoder straight from Hugging Face safetensors.

No FP32 ONNX of all-MiniLM-L6-v2 ships on PyPI, and torch is too heavy a dependency just to
export one, so the graph is written node by node with onnx's helper API. The node layout
follows what a torch export of `BertModel` produces (Q/K/V MatMul+Add, Reshape, Transpose,
Div by sqrt(head size), additive mask, Softmax; erf GELU; Add+LayerNormalization), because
that is the shape ONNX Runtime's transformer optimizer knows how to fuse into Attention,
SkipLayerNormalization, Gelu and EmbedLayerNormalization.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BertConfig:
    """The few fields of a HF `BertModel` config.json that shape the graph."""

    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    max_positions: int
    type_vocab_size: int
    # RoBERTa/XLM-R: position ids count real tokens from padding_idx + 1 (pads sit at
    # padding_idx), where BERT numbers every slot from 0.
    padding_idx: int | None = None

    @classmethod
    def load(cls, path: Path) -> BertConfig:
        """Read config.json, refusing variants this builder would get silently wrong."""
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        act = raw.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"unsupported hidden_act {act!r}: only exact (erf) 'gelu' is built")
        pos = raw.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"unsupported position_embedding_type {pos!r}")
        cfg = cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            intermediate_size=int(raw["intermediate_size"]),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            max_positions=int(raw.get("max_position_embeddings", 512)),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
        )
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError("hidden_size is not a multiple of num_attention_heads")
        return cfg


def load_bert_weights(safetensors: Path) -> dict[str, F32]:
    """Load the tensors as float32 with any `bert.` prefix removed (both layouts exist)."""
    from safetensors.numpy import load_file

    raw: dict[str, npt.NDArray[Any]] = load_file(str(safetensors))
    out: dict[str, F32] = {}
    for key, value in raw.items():
        name = key.removeprefix("bert.")
        if name.startswith(("embeddings.", "encoder.")) and value.dtype.kind == "f":
            out[name] = np.ascontiguousarray(value, dtype=np.float32)
    if "embeddings.word_embeddings.weight" not in out:
        raise ValueError(f"{safetensors} does not look like a BertModel checkpoint")
    return out


class _Graph:
    """Accumulates nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def _linear(g: _Graph, x: str, w: dict[str, F32], prefix: str, name: str) -> str:
    """x @ W^T + b, as MatMul then Add (the form the fusions and the quantizer expect)."""
    weight = g.const(f"{prefix}.weight_T", np.ascontiguousarray(w[f"{prefix}.weight"].T))
    bias = g.const(f"{prefix}.bias", w[f"{prefix}.bias"])
    mm = g.op("MatMul", [x, weight], f"{name}/MatMul")
    return g.op("Add", [mm, bias], f"{name}/Add")


def _layer_norm(g: _Graph, x: str, w: dict[str, F32], prefix: str, eps: float, name: str) -> str:
    scale = g.const(f"{prefix}.weight", w[f"{prefix}.weight"])
    bias = g.const(f"{prefix}.bias", w[f"{prefix}.bias"])
    return g.op("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=eps)


def _embeddings(g: _Graph, w: dict[str, F32], cfg: BertConfig) -> str:
    """word + token_type + position embeddings, then LayerNorm (EmbedLayerNorm-fusable)."""
    word = g.op(
        "Gather",
        [
            g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]),
            "input_ids",
        ],
        "embeddings/word/Gather",
    )
    summed = word
    tt_table = "embeddings.token_type_embeddings.weight"
    if cfg.type_vocab_size == 1 and tt_table in w:
        # One token type (XLM-R): its row is added to every position; no token_type_ids input.
        row = g.const(tt_table, w[tt_table])
        summed = g.op("Add", [word, row], "embeddings/Add_token_type")
    elif cfg.type_vocab_size > 0 and tt_table in w:
        tt = g.op(
            "Gather",
            [g.const(tt_table, w[tt_table]), "token_type_ids"],
            "embeddings/token_type/Gather",
        )
        summed = g.op("Add", [word, tt], "embeddings/Add_token_type")
    pos_ids = _position_ids(g, cfg)
    pos = g.op(
        "Gather",
        [
            g.const(
                "embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]
            ),
            pos_ids,
        ],
        "embeddings/position/Gather",
    )
    summed = g.op("Add", [summed, pos], "embeddings/Add_position")
    return _layer_norm(g, summed, w, "embeddings.LayerNorm", cfg.layer_norm_eps, "embeddings/LN")


def _position_ids(g: _Graph, cfg: BertConfig) -> str:
    """BERT: arange(seq); RoBERTa: cumsum(mask) * mask + padding_idx (pads at padding_idx)."""
    if cfg.padding_idx is not None:
        axis = g.const("const_axis_1_scalar", np.array(1, np.int64))
        count = g.op("CumSum", ["attention_mask", axis], "embeddings/position/CumSum")
        real = g.op("Mul", [count, "attention_mask"], "embeddings/position/Mul")
        offset = g.const("embeddings.padding_idx", np.array(cfg.padding_idx, np.int64))
        return g.op("Add", [real, offset], "embeddings/position/Add")
    # position_ids = arange(max_positions)[None, :seq_len], as a torch export slices its buffer.
    shape = g.op("Shape", ["input_ids"], "embeddings/Shape")
    seq = g.op(
        "Gather", [shape, g.const("const_one_scalar", np.array(1, np.int64))], "embeddings/SeqLen"
    )
    seq_1d = g.op(
        "Unsqueeze", [seq, g.const("const_axes_0", np.array([0], np.int64))], "embeddings/Unsq"
    )
    positions = g.const(
        "embeddings.position_ids", np.arange(cfg.max_positions, dtype=np.int64)[None, :]
    )
    return g.op(
        "Slice",
        [
            positions,
            g.const("const_zero_1d", np.array([0], np.int64)),
            seq_1d,
            g.const("const_one_1d", np.array([1], np.int64)),
            g.const("const_one_1d_step", np.array([1], np.int64)),
        ],
        "embeddings/position/Slice",
    )


def _mask_bias(g: _Graph) -> str:
    """(1 - mask) * lowest float, shaped [batch, 1, 1, seq]: added to every layer's scores.

    Adding the lowest float32 to a score rounds to the lowest float32 (no overflow to -inf),
    so exp() of a masked key underflows to exactly 0 while a fully masked row stays finite.
    """
    unsq1 = g.op(
        "Unsqueeze",
        ["attention_mask", g.const("const_axes_1", np.array([1], np.int64))],
        "mask/Unsqueeze_1",
    )
    unsq2 = g.op("Unsqueeze", [unsq1, g.const("const_axes_2", np.array([2], np.int64))], "mask/U2")
    as_float = g.op("Cast", [unsq2], "mask/Cast", to=TensorProto.FLOAT)
    inverted = g.op(
        "Sub", [g.const("const_one_f", np.array(1.0, np.float32)), as_float], "mask/Sub"
    )
    lowest = g.const("const_mask_value", np.array(np.finfo(np.float32).min, np.float32))
    return g.op("Mul", [inverted, lowest], "mask/Mul")


def _attention(g: _Graph, x: str, mask: str, w: dict[str, F32], cfg: BertConfig, i: int) -> str:
    """Multi-head self-attention plus output projection, residual Add and LayerNorm."""
    heads, head = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    p, n = f"encoder.layer.{i}.attention", f"layer{i}/attention"
    split = g.const(f"{n}/split_shape", np.array([0, 0, heads, head], np.int64))
    merge = g.const(f"{n}/merge_shape", np.array([0, 0, cfg.hidden_size], np.int64))

    def heads_of(kind: str, perm: list[int]) -> str:
        proj = _linear(g, x, w, f"{p}.self.{kind}", f"{n}/{kind}")
        shaped = g.op("Reshape", [proj, split], f"{n}/{kind}/Reshape")
        return g.op("Transpose", [shaped], f"{n}/{kind}/Transpose", perm=perm)

    q = heads_of("query", [0, 2, 1, 3])  # [b, h, s, d]
    k = heads_of("key", [0, 2, 3, 1])  # [b, h, d, s]
    v = heads_of("value", [0, 2, 1, 3])  # [b, h, s, d]
    scores = g.op("MatMul", [q, k], f"{n}/scores/MatMul")
    scaled = g.op(
        "Div", [scores, g.const(f"{n}/sqrt_d", np.array(math.sqrt(head), np.float32))], f"{n}/Div"
    )
    masked = g.op("Add", [scaled, mask], f"{n}/mask/Add")
    probs = g.op("Softmax", [masked], f"{n}/Softmax", axis=-1)
    ctx = g.op("MatMul", [probs, v], f"{n}/context/MatMul")
    ctx = g.op("Transpose", [ctx], f"{n}/context/Transpose", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, merge], f"{n}/context/Reshape")
    out = _linear(g, ctx, w, f"{p}.output.dense", f"{n}/output")
    res = g.op("Add", [out, x], f"{n}/residual/Add")
    return _layer_norm(g, res, w, f"{p}.output.LayerNorm", cfg.layer_norm_eps, f"{n}/LN")


def _feed_forward(g: _Graph, x: str, w: dict[str, F32], cfg: BertConfig, i: int) -> str:
    """Intermediate dense + exact erf GELU + output dense, residual Add and LayerNorm."""
    p, n = f"encoder.layer.{i}", f"layer{i}/ffn"
    h = _linear(g, x, w, f"{p}.intermediate.dense", f"{n}/intermediate")
    # gelu(h) = h * 0.5 * (1 + erf(h / sqrt(2)))
    div = g.op("Div", [h, g.const(f"{n}/sqrt2", np.array(math.sqrt(2.0), np.float32))], f"{n}/Div")
    erf = g.op("Erf", [div], f"{n}/Erf")
    plus = g.op("Add", [erf, g.const(f"{n}/one", np.array(1.0, np.float32))], f"{n}/Add_one")
    prod = g.op("Mul", [h, plus], f"{n}/Mul")
    gelu = g.op("Mul", [prod, g.const(f"{n}/half", np.array(0.5, np.float32))], f"{n}/Mul_half")
    out = _linear(g, gelu, w, f"{p}.output.dense", f"{n}/output")
    res = g.op("Add", [out, x], f"{n}/residual/Add")
    return _layer_norm(g, res, w, f"{p}.output.LayerNorm", cfg.layer_norm_eps, f"{n}/LN")


Head = str  # "none" | "pooler" (BertModel's pooler_output) | "classifier" (one logit)


def _first_token(g: _Graph, x: str) -> str:
    """hidden[:, 0, :] -> [batch, hidden]."""
    return g.op("Gather", [x, g.const("const_zero_scalar", np.array(0, np.int64))], "cls", axis=1)


def _head(g: _Graph, x: str, w: dict[str, F32], head: Head) -> tuple[str, str]:
    """(output value, output name) of the head on the first token."""
    if head == "pooler":
        dense = _linear(g, _first_token(g, x), w, "pooler.dense", "pooler/dense")
        return g.op("Tanh", [dense], "pooler/Tanh"), "pooler_output"
    if head == "classifier":
        dense = _linear(g, _first_token(g, x), w, "classifier.dense", "classifier/dense")
        act = g.op("Tanh", [dense], "classifier/Tanh")
        return _linear(g, act, w, "classifier.out_proj", "classifier/out_proj"), "logits"
    raise ValueError(f"unknown head {head!r}")


def make_bert_model(
    weights: dict[str, F32], cfg: BertConfig, head: Head = "none"
) -> onnx.ModelProto:
    """The whole encoder as an in-memory ModelProto (split out so tests can skip the disk).

    `head`: "none" gives last_hidden_state; "pooler" adds BertModel's pooler_output (dense +
    tanh on the first token); "classifier" gives only a sequence classifier's logits (dense +
    tanh + out_proj on the first token, RoBERTa's head)."""
    g = _Graph()
    x = _embeddings(g, weights, cfg)
    mask = _mask_bias(g)
    for i in range(cfg.num_layers):
        x = _attention(g, x, mask, weights, cfg, i)
        x = _feed_forward(g, x, weights, cfg, i)
    dims = ["batch", "sequence"]
    outputs = []
    if head != "classifier":
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        outputs.append(
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, [*dims, cfg.hidden_size]
            )
        )
    if head != "none":
        value, name = _head(g, x, weights, head)
        g.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}/output"))
        width = 1 if head == "classifier" else cfg.hidden_size
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width]))
    names = ["input_ids", "attention_mask"]
    if cfg.type_vocab_size > 1:
        names.append("token_type_ids")
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [helper.make_tensor_value_info(name, TensorProto.INT64, dims) for name in names],
        outputs,
        initializer=g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hero_embedder"
    )
    model.ir_version = 8  # readable by every onnxruntime this project supports (>= 1.25)
    onnx.checker.check_model(model)
    return model


def build_bert_onnx(safetensors: Path, config: Path, out: Path) -> None:
    """Write the FP32 ONNX graph of the BertModel in `safetensors` + `config` to `out`."""
    model = make_bert_model(load_bert_weights(safetensors), BertConfig.load(config))
    onnx.save(model, str(out))
