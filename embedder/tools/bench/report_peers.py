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
        model = contenders[key]["model"]
        for other, value in against.items():
            ratios[f"{model} / {SHORT.get(other, other)} (alternate rounds)"] = value
    best = best_mode(contenders)
    fe = _rate(contenders.get("fastembed"))
    for key, row in contenders.items():
        if row.get("kind") != "ours":
            continue
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
