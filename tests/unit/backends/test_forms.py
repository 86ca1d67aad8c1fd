"""The int8-weights form built on demand: once, under a lock, with a record that names its
source, again when the source or the bytes on disk change, never half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from embedder.backends import forms
from embedder.backends.cache import file_key
from embedder.store import integrity
from tests.unit.prepare.test_weights_int8 import tiny_graph


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return tiny_graph(tmp_path / "fp32" / "model.onnx")


def build(tmp_path: Path, source: Path) -> Path:
    return forms.int8_weights(tmp_path / "level", source, tmp_path / ".locks")


def test_built_once_with_a_record(tmp_path: Path, source: Path) -> None:
    (tmp_path / "level").mkdir()
    path = build(tmp_path, source)
    assert path == tmp_path / "level" / forms.INT8_WEIGHTS
    want = integrity.read_record(path, "its build")
    assert want is not None and want.sha256 == integrity.sha256(path)
    stamp = path.stat().st_mtime_ns
    assert build(tmp_path, source) == path and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [
        f".{forms.INT8_WEIGHTS}.record.json",
        forms.INT8_WEIGHTS,
    ]  # no temporary file left behind


def test_built_again_when_its_source_changes(tmp_path: Path, source: Path) -> None:
    (tmp_path / "level").mkdir()
    path = build(tmp_path, source)
    first = integrity.sha256(path)
    tiny_graph(source, seed=1)  # another FP32 graph in its place
    os.utime(source, ns=(1, 1))
    assert integrity.sha256(build(tmp_path, source)) != first


def test_a_damaged_form_is_built_again(tmp_path: Path, source: Path) -> None:
    (tmp_path / "level").mkdir()
    path = build(tmp_path, source)
    good = integrity.sha256(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a weight byte flips in place
    path.write_bytes(bytes(data))
    assert integrity.sha256(build(tmp_path, source)) == good


def test_a_root_it_cannot_write_says_why(tmp_path: Path, source: Path) -> None:
    (tmp_path / "level").write_text("a file where the model's directory should be")
    with pytest.raises(forms.FormUnavailable, match=r"cannot build openvino_int8\.onnx"):
        build(tmp_path, source)


def test_an_outdated_form_is_replaced_not_left_beside(tmp_path: Path, source: Path) -> None:
    """A new FP32 source (or recipe) builds the form again in the same place: the level's
    directory holds one form and its record, whatever was left by a build killed half-way."""
    level = tmp_path / "level"
    level.mkdir()
    path = build(tmp_path, source)
    killed = level / f".{Path(forms.INT8_WEIGHTS).stem}.0badc0de.tmp.onnx"
    killed.write_bytes(b"half a graph: its build was killed")
    tiny_graph(source, seed=1)
    os.utime(source, ns=(1, 1))
    assert build(tmp_path, source) == path
    assert sorted(p.name for p in level.iterdir()) == [
        f".{forms.INT8_WEIGHTS}.record.json",
        forms.INT8_WEIGHTS,
    ]
    doc = json.loads(integrity.record_path(path).read_text())
    assert file_key(source) in doc["made"]  # the record names the new source
