"""Ratios and targets from the starter peers' phase (`peers`): our levels against
sentence-transformers (FP32 and bf16) and fastembed on the same model, texts and cores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Target = Callable[[tuple[str, str, float], str, float | None], dict[str, Any]]

# The goals against the peers, for each of our levels of their model, served.
PEER_BEST = (
    "peer_best",
    "level served >= 1.3x sentence-transformers in its best mode here (bf16 on BF16 units)",
    1.3,
)
PEER_FASTEMBED = ("peer_fastembed", "level served >= 3x fastembed (same model, texts)", 3.0)
SHORT = {"st-fp32": "st FP32", "st-bf16": "st bf16", "fastembed": "fastembed"}
# The FP32 level as the service serves it (`default` in its row: ONNX Runtime, or where `auto`
# chose another runtime that runtime): its vectors against sentence-transformers FP32's, and
# on CPUs with BF16 units its rate against the same level on ONNX Runtime, round by round.
SERVED_COSINE = (
    "served_cosine",
    "FP32 level as served: min cosine >= 0.9998 vs sentence-transformers FP32",
    0.9998,
)
DEFAULT_ORT = (
    "default_ort",
    "FP32 level as served >= 3x ONNX Runtime FP32 (BF16 units; alternate rounds)",
    3.0,
)


def _rate(row: dict[str, Any] | None) -> float | None:
    return row.get("texts_per_s") if row and "skipped" not in row else None


def best_mode(contenders: dict[str, Any]) -> tuple[str, float] | None:
    """sentence-transformers' faster mode in this run (bf16 only where it measured faster)."""
    modes = [(k, r) for k in ("st-fp32", "st-bf16") if (r := _rate(contenders.get(k)))]
    return max(modes, key=lambda m: m[1]) if modes else None


def analyse(
    result: dict[str, Any],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    served: Callable[[str], float],
    target: Target,
) -> None:
    """Paired ratios (alternate rounds) and, per level, its best server load shape against the
    peers' rates; `served(model)` is the best server texts/s of our model."""
    p = result.get("peers")
    if not p:
        return
    contenders = p.get("contenders", {})
    for key, against in p.get("paired", {}).items():
        row = contenders[key]
        model = row["model"]
        if key != row.get("level", key):  # the level on another runtime than ONNX Runtime
            model += f" ({row.get('backend')} {row.get('computes')})"
        for other, value in against.items():
            name = SHORT.get(other, other)
            if contenders.get(other, {}).get("kind") == "ours":  # the level on ONNX Runtime
                name = "onnxruntime"
            ratios[f"{model} / {name} (alternate rounds)"] = value
    best = best_mode(contenders)
    fe = _rate(contenders.get("fastembed"))
    ours = {
        k: row
        for k, row in contenders.items()
        if row.get("kind") == "ours" and "skipped" not in row
    }
    for key, row in ours.items():
        if not row.get("default") and any(
            o.get("default") and o.get("level") == row.get("level") for o in ours.values()
        ):
            continue  # the server runs this level on another runtime: that row speaks for it
        mine = served(row["model"]) or None
        precision = row["precision"].upper()
        for other, rate in (("st-bf16", _rate(contenders.get("st-bf16"))), ("fastembed", fe)):
            if mine and rate:
                ratios[f"server {precision} (best load shape) / {SHORT[other]}"] = mine / rate
        where = f"{key} server / {SHORT[best[0]]}" if best else f"{key} server"
        value = mine / best[1] if mine and best else None
        targets.append(target(PEER_BEST, where, value))
        value = mine / fe if mine and fe else None
        targets.append(target(PEER_FASTEMBED, f"{key} server / fastembed", value))
    _served_targets(p, ours, targets, target)
    for key, row in contenders.items():  # a level the service's way could not open
        if row.get("kind") == "ours" and "skipped" in row and row.get("precision") == "fp32":
            targets.append(target(SERVED_COSINE, f"{key}: {row['skipped'][:120]}", None))


def _served_targets(
    p: dict[str, Any],
    ours: dict[str, dict[str, Any]],
    targets: list[dict[str, Any]],
    target: Target,
) -> None:
    """`SERVED_COSINE` and, on CPUs with BF16 units, `DEFAULT_ORT` for the FP32 level."""
    for key, row in ours.items():
        if not row.get("default") or row.get("precision") != "fp32":
            continue
        if p.get("reference") == "st-fp32" and "min_cosine" in row:
            got = target(SERVED_COSINE, f"{key} / st FP32", row["min_cosine"])
            if got.get("gap"):
                got["gap"] = f"min cosine {row['min_cosine']:.6f}"
            targets.append(got)
        if p.get("bf16_units"):
            level = row.get("level", key)
            if key == level:  # served on ONNX Runtime itself
                targets.append(target(DEFAULT_ORT, f"{level}: served on onnxruntime", 1.0))
                continue
            value = p.get("paired", {}).get(key, {}).get(level)
            targets.append(target(DEFAULT_ORT, f"{key} / {level} onnxruntime", value))
