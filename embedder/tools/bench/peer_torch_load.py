"""The peer's side of the comparison, loaded: the stand-in's ONNX initializers in the Hugging
Face module (so both run the SAME weights), its tokenizer, and our level's store beside it."""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from embedder.catalog import ModelSpec
    from embedder.prepare.shapes import Shape
    from embedder.store.files import ModelStore

CHECK_TEXTS = 8  # texts (or pairs) through both before anything is timed

P = TypeVar("P")


def hf_weights(onnx_path: Path, classifier: bool) -> dict[str, np.ndarray]:
    """The graph's float initializers under Hugging Face names: linear weights are stored
    transposed (`<name>.weight_T`, [in, out]) and go back to torch's [out, in]."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    out: dict[str, np.ndarray] = {}
    prefix = "roberta." if classifier else ""
    for t in model.graph.initializer:
        name = t.name
        if not name.startswith(("embeddings.", "encoder.", "pooler.", "classifier.")):
            continue  # graph constants (shapes, scalars)
        arr = numpy_helper.to_array(t)
        if arr.dtype != np.float32:
            continue  # position ids, padding index: buffers the HF module makes itself
        if name.endswith(".weight_T"):
            name, arr = name.removesuffix("_T"), arr.T
        out[name if name.startswith("classifier.") else prefix + name] = np.ascontiguousarray(arr)
    del model
    return out


def hf_model(shape: Shape, onnx_path: Path) -> Any:
    """The HF module of `shape` with the weights of its ONNX graph at `onnx_path`; refuses a
    weight it would not load."""
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")

    c = shape.config
    common = {
        "vocab_size": shape.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    classifier = shape.head == "classifier"
    if classifier:
        cfg = transformers.XLMRobertaConfig(
            **common, pad_token_id=c.padding_idx, num_labels=1, classifier_dropout=0.0
        )
        model = transformers.XLMRobertaForSequenceClassification(cfg)
    else:
        model = transformers.BertModel(transformers.BertConfig(**common), add_pooling_layer=True)
    weights = hf_weights(onnx_path, classifier)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    result = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    unset = sorted(params - set(state))
    if unset or result.unexpected_keys:
        raise ValueError(
            f"weights do not map: unset {unset[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    return model


def tokenizer(path: Path, max_tokens: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_tokens)
    tok.enable_padding()
    return tok


def our_level(models_root: Path, model_id: str) -> tuple[Any, Any]:
    """Our FP32 level as a worker opens it (for the check only)."""
    from embedder.catalog import SHAPES
    from embedder.store.files import ModelStore

    store = ModelStore(models_root, SHAPES, offline=True)
    return store, SHAPES.get(model_id)


class _Peer(Protocol):
    model: Any
    tok: Any
    batch: int


def bf16_twin(make: Callable[[Any, Any, int], P], peer: _Peer) -> P:
    """The same peer in bf16, weights and compute, as `torch_dtype=torch.bfloat16` loads it
    (a copy: `Module.to` casts in place, and the FP32 peer must stay FP32)."""
    torch: Any = importlib.import_module("torch")
    return make(copy.deepcopy(peer.model).to(torch.bfloat16), peer.tok, peer.batch)


@dataclass(frozen=True)
class Loaded(Generic[P]):
    """A peer on a stand-in's weights, with our level's store and spec for the check."""

    store: ModelStore
    spec: ModelSpec
    peer: P
    load_s: float  # the HF module and the tokenizer


def load_peer(
    make: Callable[[Any, Any, int], P],
    name: str,
    model_id: str,
    models_root: Path,
    *,
    batch: int,
    max_tokens: int,
) -> Loaded[P]:
    """The peer `make(model, tokenizer, batch)` builds on the stand-in `name`'s weights."""
    from embedder.catalog import SHAPES
    from embedder.prepare.shapes import SHAPES as SHAPES_BY_NAME

    spec = SHAPES.get(model_id)
    assert spec.onnx and spec.tokenizer
    store, _ = our_level(models_root, model_id)
    began = time.perf_counter()
    model = hf_model(SHAPES_BY_NAME[name], store.path(spec, spec.onnx))
    peer = make(model, tokenizer(store.path(spec, spec.tokenizer), max_tokens), batch)
    return Loaded(store, spec, peer, time.perf_counter() - began)
