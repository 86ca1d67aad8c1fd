"""A plain numpy BERT forward pass in float64: the reference the ONNX graphs are checked against.

It shares no code with `embedder.prepare.bert_onnx` (nor ONNX / ONNX Runtime), so a mistake in
the graph builder cannot hide by being repeated here. float64 keeps its own rounding error far
below the float32 error of the graph under test.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


# erf by cubic Hermite interpolation between math.erf values on a 1/1024 grid over [-6, 6]
# (|error| < 2e-14; erf(±6) is ±1 in float64). numpy has no erf, and calling math.erf per
# element would make the reference the slowest part of the test suite.
_STEPS = 1024
_GRID = np.arange(-6 * _STEPS, 6 * _STEPS + 1, dtype=np.float64) / _STEPS
_ERF = np.array([math.erf(v) for v in _GRID])
_DERIV = 2.0 / math.sqrt(math.pi) * np.exp(-_GRID * _GRID) / _STEPS  # d erf / d grid-step


def _erf_block(x: F64) -> F64:
    u = (np.clip(x, -6.0, 6.0) + 6.0) * _STEPS
    i = np.minimum(u.astype(np.int64), _GRID.size - 2)
    t = u - i
    t2 = t * t
    t3 = t2 * t
    y0 = _ERF[i]
    return np.asarray(
        y0
        + (3 * t2 - 2 * t3) * (_ERF[i + 1] - y0)
        + (t3 - 2 * t2 + t) * _DERIV[i]
        + (t3 - t2) * _DERIV[i + 1],
        dtype=np.float64,
    )


def _erf(x: F64) -> F64:
    """erf elementwise, in cache-sized blocks (10x faster than whole-array temporaries)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    block = 1 << 15
    for start in range(0, flat.size, block):
        out[start : start + block] = _erf_block(flat[start : start + block])
    return out.reshape(x.shape)


def _layer_norm(x: F64, gamma: F64, beta: F64, eps: float) -> F64:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * gamma + beta, dtype=np.float64)


@dataclass
class NumpyBert:
    """BertModel weights (float64) and the hyper-parameters the forward pass needs."""

    w: dict[str, F64]
    heads: int
    layers: int
    eps: float

    @classmethod
    def load(cls, safetensors: Path, config: Path) -> NumpyBert:
        cfg: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
        assert cfg.get("hidden_act", "gelu") == "gelu"
        weights = {
            k[len("bert.") :] if k.startswith("bert.") else k: v.astype(np.float64)
            for k, v in load_file(str(safetensors)).items()
        }
        return cls(
            w=weights,
            heads=int(cfg["num_attention_heads"]),
            layers=int(cfg["num_hidden_layers"]),
            eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )

    def _dense(self, x: F64, name: str) -> F64:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _ln(self, x: F64, name: str) -> F64:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def forward(self, input_ids: I64, attention_mask: I64, token_type_ids: I64) -> F64:
        """last_hidden_state [batch, seq, hidden] for one (padded) batch."""
        batch, seq = input_ids.shape
        w = self.w
        x = w["embeddings.word_embeddings.weight"][input_ids]
        x = x + w["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
        if "embeddings.token_type_embeddings.weight" in w:
            x = x + w["embeddings.token_type_embeddings.weight"][token_type_ids]
        x = self._ln(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        d = hidden // self.heads
        keep = attention_mask.astype(bool)[:, None, None, :]  # [b, 1, 1, s_k]
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t: F64) -> F64:
                return t.reshape(batch, seq, self.heads, d).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
            scores = np.where(keep, scores, -np.inf)
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs = probs / probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            x = self._ln(
                x + self._dense(ctx, f"{p}.attention.output.dense"),
                f"{p}.attention.output.LayerNorm",
            )
            h = self._dense(x, f"{p}.intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = self._ln(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


def mean_pool_normalize(hidden: npt.NDArray[Any], attention_mask: I64) -> F64:
    """Mean over the real tokens, then L2 norm (sentence-transformers' MiniLM recipe)."""
    m = attention_mask.astype(np.float64)[..., None]
    pooled = (hidden.astype(np.float64) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float64)


def cls_normalize(hidden: npt.NDArray[Any]) -> F64:
    """The first token's state, L2-normalised (BGE's recipe)."""
    cls = hidden[:, 0, :].astype(np.float64)
    return np.asarray(cls / np.linalg.norm(cls, axis=1, keepdims=True), dtype=np.float64)
