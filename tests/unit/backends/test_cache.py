"""The kept choice: found again under the same key, not under another, never a crash on a bad
or unwritable file."""

from __future__ import annotations

import os
from pathlib import Path

from embedder.backends import cache as cache_mod
from embedder.backends.cache import ChoiceCache, cpu_key, file_key

KEY = {"cpu": "Some CPU avx2", "files": {"own": "model.onnx:10:1"}, "layout": {"threads": 1}}
ENTRY = {"choice": {"backend": "openvino", "precision": "fp32", "graph": "own"}, "measured": []}


def test_a_choice_is_found_again_under_its_key_only(tmp_path: Path):
    kept = ChoiceCache(tmp_path)
    assert kept.get("m", KEY) is None
    assert kept.put("m", KEY, ENTRY)
    found = kept.get("m", KEY)
    assert found is not None and found["choice"] == ENTRY["choice"]
    assert found["key"] == KEY and found["at"]
    assert ChoiceCache(tmp_path).get("m", KEY) is not None  # another worker, a restart
    assert kept.get("m", {**KEY, "cpu": "Another CPU avx2 avx512f"}) is None
    assert kept.get("other-model", KEY) is None
    assert not list(tmp_path.glob("m/*.tmp"))  # written whole, renamed into place


def test_a_corrupt_file_is_ignored_and_replaced(tmp_path: Path):
    kept = ChoiceCache(tmp_path)
    kept.path("m").parent.mkdir()
    kept.path("m").write_text("{not json")
    assert kept.get("m", KEY) is None
    assert kept.put("m", KEY, ENTRY)
    assert kept.get("m", KEY) is not None


def test_an_unwritable_target_costs_only_the_keeping(tmp_path: Path):
    kept = ChoiceCache(tmp_path)
    kept.path("m").mkdir(parents=True)  # a directory where the file should go: rename fails
    assert not kept.put("m", KEY, ENTRY)
    assert kept.get("m", KEY) is None
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_only_the_latest_entries_are_kept(tmp_path: Path):
    kept = ChoiceCache(tmp_path)
    for i in range(cache_mod.KEEP + 3):  # within a second or not: the oldest go first
        kept.put("m", {**KEY, "n": i}, ENTRY)
    assert kept.get("m", {**KEY, "n": 0}) is None
    assert kept.get("m", {**KEY, "n": cache_mod.KEEP + 2}) is not None


def test_the_file_key_changes_with_the_file(tmp_path: Path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"1234")
    before = file_key(f)
    os.utime(f, ns=(1, 1))
    assert file_key(f) != before
    assert file_key(f).startswith("model.onnx:4:")


def test_the_cpu_key_names_the_model_and_its_vector_extensions(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon Gold\nflags\t\t: fpu sse avx2 avx512f amx_bf16\n"
        "processor\t: 1\nmodel name\t: Intel Xeon Gold\nflags\t\t: fpu sse avx2 avx512f amx_bf16\n"
    )
    assert cpu_key(info) == "Intel Xeon Gold avx2 avx512f amx_bf16"
    assert cpu_key(tmp_path / "missing")  # somewhere without /proc: still a key


def test_a_root_that_is_no_directory_costs_only_the_keeping(tmp_path: Path):
    """A models root under a file (a read-only or misconfigured root): the choice is not
    kept, and nothing raises (a model must not fail for its cache)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    kept = ChoiceCache(blocker / "models")
    assert not kept.put("m", KEY, ENTRY)
    assert kept.get("m", KEY) is None
