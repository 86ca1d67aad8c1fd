"""Recipes that build model files from other files (an FP32 graph from safetensors, an INT8
graph from an FP32 one). The store runs them once per machine, under its file lock, writing
to a temporary name that it renames only once the recipe has finished."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

Recipe = Callable[[Sequence[Path], Path], None]


class Stale(NamedTuple):
    """Why a built file must be built again, and whether it may still serve meanwhile (an
    older recipe's graph computes the same function; one that saturates on this CPU does not)."""

    reason: str
    usable: bool


def _bert_onnx(inputs: Sequence[Path], out: Path) -> None:
    from embedder.prepare.bert_onnx import build_bert_onnx

    safetensors, config = inputs
    build_bert_onnx(safetensors, config, out)


def _quantize_int8(inputs: Sequence[Path], out: Path) -> None:
    from embedder.prepare.quantize import quantize_int8

    (src,) = inputs
    quantize_int8(src, out)


def _shape(name: str) -> Recipe:
    """A BGE-shaped graph with seeded random weights (`embedder.prepare.shapes`); no inputs."""

    def build(inputs: Sequence[Path], out: Path) -> None:
        from embedder.prepare.shapes import build_shape

        build_shape(name, out)

    return build


def _int8_why_rebuild(path: Path) -> Stale | None:
    from embedder.prepare.quantize import why_rebuild

    return why_rebuild(path)


# Why a built file that is present must be built again (None: it need not): made by an older
# version of its recipe, or on another CPU kind (an INT8 file with signed weights copied to a
# CPU where they saturate).
WHY_REBUILD: dict[str, Callable[[Path], Stale | None]] = {"quantize-int8": _int8_why_rebuild}

RECIPES: dict[str, Recipe] = {
    "bert-onnx": _bert_onnx,
    "quantize-int8": _quantize_int8,
    "shape-bge-small": _shape("bge-small"),
    "shape-bge-base": _shape("bge-base"),
    "shape-bge-reranker-base": _shape("bge-reranker-base"),
}
