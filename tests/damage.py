"""Damage done to real model files, as a bad disk block or a stray write would do it."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from embedder.store import integrity
from embedder.store.files import ModelStore

# A weight of the first layer of the BERT graph the project builds: NaN there reaches every
# token of every text (word embeddings would spoil a few token ids only).
LAYER_0_WEIGHT = "encoder.layer.0.intermediate.dense.weight_T"


def spoil_weight(graph: Path, weight: str = LAYER_0_WEIGHT, size: int = 4096) -> None:
    """Overwrite `size` bytes of the initializer `weight` of the ONNX file `graph` with 0xFF,
    in place: 0xFFFFFFFF is a float32 NaN. The file keeps its size and still loads."""
    model = onnx.load(str(graph))
    raw = next(i.raw_data for i in model.graph.initializer if i.name == weight)
    assert len(raw) >= size, f"{weight} has only {len(raw)} bytes"
    at = graph.read_bytes().find(raw[:256])
    assert at > 0, f"{weight}'s bytes not found in {graph}"
    with graph.open("r+b") as f:
        f.seek(at)
        f.write(b"\xff" * size)


def copy_models(store: ModelStore, root: Path, *model_ids: str) -> Path:
    """The models' directories of `store` (files and their records) copied into `root`: damage
    done to the copies never reaches the shared models root."""
    for model_id in model_ids:
        store.ensure(store.catalog.get(model_id))
        skip = shutil.ignore_patterns(".progress.json", ".download")
        shutil.copytree(store.root / model_id, root / model_id, ignore=skip)
    return root


def as_built(path: Path) -> None:
    """Record the file at `path` as its build made it: what a recipe that wrote these very
    bytes (NaN weights included) would have recorded, so the store's check at load passes."""
    integrity.write_record(path, path.stat().st_size, integrity.sha256(path), "a test")
