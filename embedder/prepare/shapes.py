"""Shape-true stand-ins for the BGE models: graphs with exactly their architectures and
seeded random weights, built by this project's graph builder (no download).

They exist for performance and memory work only: their vectors and scores MEAN NOTHING. What
they share with the real files is what costs time and memory: parameter count, layer shapes,
inputs and outputs (so a real Hub file is a drop-in for the same code path). No XLM-R
tokenizer is available here, so the reranker stand-in is fed the starter WordPiece tokenizer,
whose ids (< 30522) are in range of its 250002-row vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from embedder.prepare.bert_onnx import F32, BertConfig, Head, make_bert_model


@dataclass(frozen=True)
class Shape:
    name: str  # the real model it stands in for
    config: BertConfig
    vocab_size: int
    head: Head  # pooler (BertModel) or classifier (XLMRobertaForSequenceClassification)
    params: int  # the real model's parameter count (Hugging Face, head included)


def _bert(hidden: int, intermediate: int) -> BertConfig:
    return BertConfig(
        hidden_size=hidden,
        num_heads=12,
        num_layers=12,
        intermediate_size=intermediate,
        layer_norm_eps=1e-12,
        max_positions=512,
        type_vocab_size=2,
    )


SHAPES: dict[str, Shape] = {
    "bge-small": Shape("BAAI/bge-small-en-v1.5", _bert(384, 1536), 30522, "pooler", 33_360_000),
    "bge-base": Shape("BAAI/bge-base-en-v1.5", _bert(768, 3072), 30522, "pooler", 109_482_240),
    "bge-reranker-base": Shape(
        "BAAI/bge-reranker-base",
        BertConfig(
            hidden_size=768,
            num_heads=12,
            num_layers=12,
            intermediate_size=3072,
            layer_norm_eps=1e-5,
            max_positions=514,
            type_vocab_size=1,
            padding_idx=1,
        ),
        250002,
        "classifier",
        278_044_417,
    ),
}


def random_weights(shape: Shape, seed: int = 0) -> dict[str, F32]:
    """Hugging Face tensor names with BERT's initialisation (normal, std 0.02; LayerNorm 1/0),
    the same for the same seed."""
    cfg = shape.config
    rng = np.random.default_rng(seed)
    h, inter = cfg.hidden_size, cfg.intermediate_size
    w: dict[str, F32] = {}

    def normal(name: str, *dims: int) -> None:
        w[name] = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)

    def linear(prefix: str, out_dim: int, in_dim: int) -> None:
        normal(f"{prefix}.weight", out_dim, in_dim)  # torch layout: [out, in]
        w[f"{prefix}.bias"] = np.zeros(out_dim, np.float32)

    def norm(prefix: str) -> None:
        w[f"{prefix}.weight"] = np.ones(h, np.float32)
        w[f"{prefix}.bias"] = np.zeros(h, np.float32)

    normal("embeddings.word_embeddings.weight", shape.vocab_size, h)
    normal("embeddings.position_embeddings.weight", cfg.max_positions, h)
    normal("embeddings.token_type_embeddings.weight", cfg.type_vocab_size, h)
    norm("embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        for kind in ("query", "key", "value"):
            linear(f"{p}.attention.self.{kind}", h, h)
        linear(f"{p}.attention.output.dense", h, h)
        norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", inter, h)
        linear(f"{p}.output.dense", h, inter)
        norm(f"{p}.output.LayerNorm")
    if shape.head == "pooler":
        linear("pooler.dense", h, h)
    else:
        linear("classifier.dense", h, h)
        linear("classifier.out_proj", 1, h)
    return w


def make_shape_model(shape: Shape, seed: int = 0) -> onnx.ModelProto:
    return make_bert_model(random_weights(shape, seed), shape.config, shape.head)


def parameter_count(model: onnx.ModelProto) -> int:
    """Float weights of a graph (tensors, not the scalar constants its nodes use)."""
    return sum(
        int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 1
    )


def with_layers(shape: Shape, layers: int, vocab_size: int | None = None) -> Shape:
    """A cheaper copy (fewer layers, a smaller vocabulary) for structural tests."""
    return replace(
        shape,
        config=replace(shape.config, num_layers=layers),
        vocab_size=vocab_size or shape.vocab_size,
    )


def build_shape(name: str, out: Path, seed: int = 0) -> None:
    onnx.save(make_shape_model(SHAPES[name], seed), str(out))
