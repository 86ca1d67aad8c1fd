"""EMBEDDER_SHARED_WEIGHTS: sessions read one mapped copy of the weights, same vectors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import psutil

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.prepare.external import external_copy
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer
from tests.models import paraphrase_onnx, tokenizer_json

TEXTS = ["a short one", "a somewhat longer text about weights shared between sessions " * 3]


def test_external_copy_maps_its_weights_and_gives_the_same_vectors(tmp_path: Path) -> None:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    tok = load_tokenizer(tokenizer_json(), 128)
    copy = external_copy(paraphrase_onnx(), tmp_path)
    data = [p for p in tmp_path.iterdir() if p.name.endswith(".data")]
    assert copy.is_file() and len(data) == 1
    assert copy.stat().st_size < 1024 * 1024 < data[0].stat().st_size  # weights left the graph
    plain = TextEncoder(spec, open_session(paraphrase_onnx(), SessionConfig(threads=1)), tok)
    shared_cfg = SessionConfig(threads=1, shared_weights=True)
    shared = [TextEncoder(spec, open_session(copy, shared_cfg), tok) for _ in range(2)]
    for e in shared:
        np.testing.assert_allclose(e.embed(TEXTS).vectors, plain.embed(TEXTS).vectors, atol=1e-5)
    mapped = [m for m in psutil.Process().memory_maps() if m.path == str(data[0])]
    assert mapped, "ONNX Runtime should map the data file, not copy it"


def test_external_copy_is_made_once_and_remade_when_the_source_changes(tmp_path: Path) -> None:
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    shutil.copy(paraphrase_onnx(), src)
    cache = tmp_path / "cache"
    first = external_copy(src, cache)
    made = first.stat().st_mtime_ns
    assert external_copy(src, cache) == first and first.stat().st_mtime_ns == made
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version of the model
    external_copy(src, cache)
    data = sorted(p.name for p in cache.iterdir() if p.name.endswith(".data"))
    assert len(data) == 1 and data[0].endswith(f".{src.stat().st_mtime_ns}.data")
