"""The `embedder` command: help, exit codes, and each models action on real files."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import socketserver
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import onnx
import onnxruntime as ort
import pytest

from embedder.backends import forms
from embedder.catalog import STARTER
from embedder.cli import main as cli
from embedder.service import Service
from embedder.store import integrity
from embedder.store.files import ModelStore
from tests.damage import as_built, copy_models, spoil_weight
from tests.fakehub import DEFAULT_COMMIT, FakeHub

ROOT = Path(__file__).resolve().parents[3]


def run(*argv: str) -> int:
    return cli.main(list(argv))


def run_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child, for exit codes as a shell script sees them."""
    return subprocess.run(
        [sys.executable, "-m", "embedder.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


# --- help and exit codes --------------------------------------------------------------------


COMMANDS = ["", "serve", "status", "embed", "rerank", "models"]
COMMANDS += [f"models {action}" for action in ("list", "pull", "verify", "quantize")]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*command.split(), "--help")
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: embedder {command}".rstrip())
    assert "exit codes: 0 ok, 1 failure" in out or "exit codes: 0 ok, 1 degraded" in out


def test_bench_help_is_the_benchs_own(capsys: pytest.CaptureFixture[str]) -> None:
    """`embedder bench --help` lists what the bench takes, not an empty wrapper's help."""
    with pytest.raises(SystemExit) as exc:
        run("bench", "--help")
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: embedder bench")
    for option in ("--quick", "--levels", "--layouts", "--catalog", "--budget", "--server-env"):
        assert option in out


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run() == cli.USAGE  # no command: help on stderr
    assert run("models") == cli.USAGE
    for argv in (["nope"], ["status", "--bogus"], ["models", "quantize", "only-src"]):
        with pytest.raises(SystemExit) as exc:
            run(*argv)
        assert exc.value.code == cli.USAGE
    assert run("--catalog", str(tmp_path / "none.toml"), "models", "list") == cli.USAGE
    assert "unknown catalog" in capsys.readouterr().err
    assert run("--catalog", "starter", "models", "pull", "no-such-model") == cli.USAGE
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_console_script_and_unreachable_service(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("embedder")
    assert script.is_file(), "pip install -e . installs the console script"
    assert subprocess.run([script, "--help"], capture_output=True, timeout=60).returncode == 0
    done = run_process("status", env={"PATH_SOCKETS": str(tmp_path)})
    assert done.returncode == cli.UNREACHABLE
    sock = tmp_path / "hero_embedder_provider" / "rpc.sock"
    assert str(sock) in done.stderr and "Is the service running" in done.stderr


def test_bench_delegates_or_says_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def without_bench(name: str, package: str | None = None) -> Any:
        return None if name == "embedder.tools.bench" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_bench)
    assert run("bench") == cli.FAILURE
    assert "embedder.tools.bench" in capsys.readouterr().err
    monkeypatch.undo()

    seen: list[list[str]] = []
    fake = types.ModuleType("embedder.tools.bench")
    fake.__spec__ = importlib.machinery.ModuleSpec("embedder.tools.bench", None)

    def bench_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    fake.main = bench_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embedder.tools.bench", fake)
    assert run("bench", "--", "--quick", "-n", "3") == cli.OK
    assert seen == [["--quick", "-n", "3"]]


# --- status against a stand-in JSON-RPC server ----------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    answer: ClassVar[dict[str, Any]] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"jsonrpc": "2.0", "id": req["id"], **self.answer}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def canned(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "rpc.sock"
    server = socketserver.ThreadingUnixStreamServer(str(sock), _Canned)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield sock
    server.shutdown()
    server.server_close()


def _status(state: str) -> dict[str, Any]:
    model = {"id": "m", "kind": "embedding", "level": 2, "dims": 384, "max_tokens": 256}
    model |= {"precision": "int8", "state": "ready", "ready": True, "error": None}
    model |= {"disk_bytes": 2048, "load_seconds": 0.5}
    download = {"state": "downloading", "bytes_done": 1024, "bytes_total": 4096}
    failed = {"state": "error", "bytes_done": 0, "bytes_total": 0}  # nothing could be fetched
    head = {"status": state, "models_ready": state == "ok", "models_loaded": ["m"]}
    head |= {"catalog": "starter", "models_root": "/m"}
    downloads = {"m": download, "n": failed}
    failures = {"download": "the Hub could not be reached"}
    return (
        head
        | {"uptime_s": 3.0, "models": [model], "aliases": {}, "downloads": downloads}
        | {"failures": failures}
    )


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"result": _status("ok")}, cli.OK),
        ({"result": _status("starting")}, cli.NOT_READY),
        ({"result": _status("degraded")}, cli.FAILURE),
        ({"error": {"code": -32001, "message": "loading"}}, cli.NOT_READY),
        ({"error": {"code": -32603, "message": "internal error"}}, cli.FAILURE),
    ],
)
def test_status_exit_codes(
    canned: Path,
    answer: dict[str, Any],
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_Canned, "answer", answer)
    assert run("status", "--socket", str(canned)) == code
    if "result" in answer:
        out = capsys.readouterr().out
        assert out.startswith(f"{answer['result']['status']}: catalog starter")
        assert "download m: downloading 1.0 KiB of 4.0 KiB" in out
        assert "download n: error\n" in out and "0 B of 0 B" not in out
        assert "failures.download: the Hub could not be reached" in out
        assert run("status", "--socket", str(canned), "--json") == code
        assert json.loads(capsys.readouterr().out) == answer["result"]


# --- models list / verify / quantize on the starter catalog ---------------------------------


def test_models_list_json_and_table(
    starter_service: Service, starter_store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(starter_store.root)
    assert run("--catalog", "starter", "--models-root", root, "models", "list", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["catalog"] == "starter" and doc["models_root"] == root
    assert [m["id"] for m in doc["models"]] == [m.id for m in STARTER]
    assert all(m["present"] and not m["missing"] for m in doc["models"])
    assert [m["level"] for m in doc["models"]] == [1, 2, 3, 4, None]
    assert all(m["disk"] > 1_000_000 for m in doc["models"] if m["kind"] == "embedding")
    assert doc["aliases"]["text-embedding-3-small"] == "all-minilm-l6-v2-int8"
    assert run("models", "list", "--catalog", "starter", "--models-root", root) == 0
    out, err = capsys.readouterr()
    assert "catalog starter (from --catalog; another: --catalog bge|starter|shapes|FILE)" in err
    table = out.splitlines()
    assert " ".join(table[0].split()) == "ID LEVEL KIND PRECISION DIMS MAX TOKENS FILES SIZE"
    assert (
        " ".join(table[2].split()[:7]) == "all-minilm-l6-v2-int8 2 embedding int8 384 256 present"
    )


@pytest.mark.slow
def test_models_verify_loads_every_starter_model(
    starter_service: Service, starter_store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--catalog", "starter", "--models-root", str(starter_store.root), "models", "verify")
    assert run(*args) == cli.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", f"{m.id}:"] for m in STARTER]
    assert "384 dims" in lines[0] and "scores" in lines[-1]


def test_models_verify_reports_missing_and_broken_files(
    starter_service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    (root / "all-minilm-l6-v2").mkdir(parents=True)
    (root / "all-minilm-l6-v2" / "model.onnx").write_bytes(b"not an onnx graph")
    args = ("--catalog", "starter", "--models-root", str(root), "models", "verify")
    assert run(*args, "all-minilm-l6-v2", "all-minilm-l6-v2-int8") == cli.FAILURE
    out = capsys.readouterr().out
    assert "FAIL  all-minilm-l6-v2-int8: model_int8.onnx: missing" in out
    assert "FAIL  all-minilm-l6-v2: does not load" in out
    assert not (root / "all-minilm-l6-v2-int8" / "model_int8.onnx").exists(), "verify never builds"


def test_models_verify_fails_on_damaged_weights(
    starter_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's damage: 4 KB of 0xFF in a weight of all-minilm-l6-v2/model.onnx. Before,
    verify printed "ok ... scores [nan, nan]" and exited 0."""
    l6, cosine = "all-minilm-l6-v2", "minilm-cosine-rerank"
    root = copy_models(starter_store, tmp_path / "models", l6)
    graph = root / l6 / "model.onnx"
    spoil_weight(graph)
    args = ("--catalog", "starter", "--models-root", str(root), "models", "verify", l6, cosine)
    assert run(*args) == cli.FAILURE
    out = capsys.readouterr().out
    assert f"FAIL  {l6}: model.onnx: sha256 " in out, out
    assert f"FAIL  {cosine}: {l6}/model.onnx: sha256 " in out, out
    # The same bytes recorded as if their build had made them: the files pass, the run fails.
    as_built(graph)
    assert run(*args) == cli.FAILURE
    out = capsys.readouterr().out
    assert f"FAIL  {l6}: model {l6} computed NaN or Inf" in out, out
    assert f"FAIL  {cosine}: model {l6} computed NaN or Inf" in out, out
    assert "ok " not in out


def test_models_verify_reports_openvinos_int8_form(
    starter_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The int8-weights form OpenVINO runs, built beside an INT8 level's files on CPUs where it
    is a candidate: said current, or stale (its FP32 source changed) or damaged, either to be
    built again on the next load; the level itself serves meanwhile (exit 0)."""
    l6, int8 = "all-minilm-l6-v2", "all-minilm-l6-v2-int8"
    root = copy_models(starter_store, tmp_path / "models", l6, int8)
    source = forms.fp32_source(ModelStore(root, STARTER, offline=True), STARTER.get(int8))
    assert source is not None
    form = forms.int8_weights(root / int8, source, root / ".locks")
    args = ("--catalog", "starter", "--models-root", str(root), "models", "verify", int8)
    assert run(*args) == cli.OK
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"ok    {int8}: ") and line.endswith("; openvino_int8.onnx current")
    was = source.stat()
    os.utime(source, ns=(was.st_atime_ns, was.st_mtime_ns + 10**9))  # a newer FP32 file
    assert run(*args) == cli.OK
    note, ok = capsys.readouterr().out.splitlines()
    assert note.startswith(f"note  {int8}: openvino_int8.onnx: stale (built by the recipe ")
    assert note.endswith("): will be rebuilt on next load") and ok.startswith(f"ok    {int8}: ")
    os.utime(source, ns=(was.st_atime_ns, was.st_mtime_ns))
    data = bytearray(form.read_bytes())
    data[-100] ^= 0xFF  # a weight byte flips in place
    form.write_bytes(bytes(data))
    assert run(*args) == cli.OK
    note, ok = capsys.readouterr().out.splitlines()
    assert note.startswith(f"note  {int8}: openvino_int8.onnx: damaged (sha256 "), note
    assert note.endswith("will be rebuilt on next load") and "current" not in ok
    assert sorted(p.name for p in (root / int8).iterdir() if "openvino" in p.name) == [
        f".{forms.INT8_WEIGHTS}.record.json",
        forms.INT8_WEIGHTS,
    ], "verify never builds"


@pytest.mark.slow
def test_models_quantize(starter_store: ModelStore, tmp_path: Path) -> None:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    src, out = starter_store.path(spec, "model.onnx"), tmp_path / "int8.onnx"
    assert run("models", "quantize", str(src), str(out)) == cli.OK
    assert out.stat().st_size < src.stat().st_size
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert any("Integer" in op or "QuantizeLinear" in op for op in ops), ops
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}
    assert run("models", "quantize", str(tmp_path / "none.onnx"), str(out)) == cli.FAILURE
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"], "no partial file left"


# --- models pull against the fake Hub --------------------------------------------------------

REPO = "test-org/cli-tiny"
ONNX = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
TOKENIZER = b'{"version": "1.0"}' * 100


@pytest.fixture
def tiny_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeHub]]:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    toml = tmp_path / "tiny.toml"
    toml.write_text(f"""
name = "tiny"
[[models]]
id = "tiny-embed"
repo = "{REPO}"
revision = "{DEFAULT_COMMIT}"
files = ["config.json"]
sha256 = {{ "onnx/model.onnx" = "{hashlib.sha256(ONNX).hexdigest()}" }}
dims = 8
max_tokens = 16
[[models]]
id = "tiny-broken"
repo = "{REPO}"
revision = "{DEFAULT_COMMIT}"
onnx = "onnx/absent.onnx"
""")
    with FakeHub(chunk_size=256 * 1024) as hub:
        hub.add(REPO, "onnx/model.onnx", ONNX)
        hub.add(REPO, "tokenizer.json", TOKENIZER)
        hub.add(REPO, "config.json", b"{}", lfs=False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield toml, hub


def test_models_pull_downloads_with_progress(
    tiny_catalog: tuple[Path, FakeHub], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml, hub = tiny_catalog
    root = tmp_path / "models"
    args = ("--catalog", str(toml), "--models-root", str(root), "models")
    assert run(*args, "pull", "tiny-embed") == cli.OK
    assert (root / "tiny-embed" / "onnx" / "model.onnx").read_bytes() == ONNX
    assert (root / "tiny-embed" / "tokenizer.json").read_bytes() == TOKENIZER
    err = capsys.readouterr().err
    for name in ("onnx/model.onnx", "tokenizer.json", "config.json"):
        assert f"tiny-embed/{name}" in err
    assert "100%" in err and "ok    tiny-embed: 3.0 MiB" in err
    assert run(*args, "pull", "tiny-embed") == cli.OK  # again: nothing to fetch
    assert "tiny-embed: already present" in capsys.readouterr().err
    assert hub.gets[hub.key(REPO, "onnx/model.onnx")] == 1
    assert run(*args, "pull") == cli.FAILURE  # every model: tiny-broken cannot be fetched
    assert "FAIL  tiny-broken:" in capsys.readouterr().err
    assert run(*args, "list", "--json") == cli.OK
    present = {m["id"]: m["present"] for m in json.loads(capsys.readouterr().out)["models"]}
    assert present == {"tiny-embed": True, "tiny-broken": False}
    shutil.rmtree(root)


def test_models_commands_say_which_catalog_they_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no service running, the CLI defaults to bge, and says so and why."""
    monkeypatch.delenv("EMBEDDER_CATALOG", raising=False)
    monkeypatch.setenv("PATH_SOCKETS", str(tmp_path))
    assert run("--models-root", str(tmp_path), "models", "list", "--json") == cli.OK
    out, err = capsys.readouterr()
    assert json.loads(out)["catalog"] == "bge"
    sock = tmp_path / "hero_embedder_provider" / "rpc.sock"
    assert f"catalog bge (the default: no service answers on {sock}; another: --catalog " in err
    assert "--catalog bge|starter|shapes|FILE" in err
    monkeypatch.setenv("EMBEDDER_CATALOG", "starter")
    assert run("--models-root", str(tmp_path), "models", "list") == cli.OK
    assert "catalog starter (from EMBEDDER_CATALOG" in capsys.readouterr().err


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in service answering `status` on rpc.sock under PATH_SOCKETS=tmp_path."""
    sock = tmp_path / "hero_embedder_provider" / "rpc.sock"
    sock.parent.mkdir()
    server = socketserver.ThreadingUnixStreamServer(str(sock), _Canned)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("PATH_SOCKETS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_CATALOG", raising=False)
    monkeypatch.delenv("EMBEDDER_MODELS_ROOT", raising=False)
    yield sock
    server.shutdown()
    server.server_close()


def test_models_list_reads_the_catalog_the_running_service_serves(
    served: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make run` serves starter while the default is bge: a bare `models list` lists the
    running service's catalog and models root, and says where it got them."""
    monkeypatch.setattr(_Canned, "answer", {"result": _status("ok") | {"models_root": "/m"}})
    assert run("models", "list", "--json") == cli.OK
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["catalog"], doc["models_root"]) == ("starter", "/m")
    assert [m["id"] for m in doc["models"]] == [m.id for m in STARTER]
    assert f"catalog starter (the one the service on {served} serves; another: " in err
    assert run("models", "list", "--json", "--models-root", str(tmp_path)) == cli.OK
    assert json.loads(capsys.readouterr().out)["models_root"] == str(tmp_path)
    assert run("models", "list", "--json", "--catalog", "shapes") == cli.OK
    assert json.loads(capsys.readouterr().out)["catalog"] == "shapes"
    monkeypatch.setattr(_Canned, "answer", {"result": _status("ok") | {"catalog": "mine"}})
    assert run("models", "list", "--json") == cli.OK
    out, err = capsys.readouterr()
    assert json.loads(out)["catalog"] == "bge"
    assert f"the service on {served} serves 'mine', from a catalog file" in err


def test_an_older_int8_file_is_listed_and_pulled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A models root from before the current INT8 recipe: `list` says so, `pull` builds the
    file again; when that fails, `pull` says FAIL (exit 1) and the older file stays."""
    from embedder import prepare
    from embedder.prepare.metadata import read_metadata
    from embedder.prepare.quantize import RECIPE, RECIPE_KEY

    root = tmp_path / "models"
    args = ("--catalog", "starter", "--models-root", str(root), "models")
    assert run(*args, "pull", "all-minilm-l6-v2-int8") == cli.OK
    int8 = root / "all-minilm-l6-v2-int8" / "model_int8.onnx"
    model = onnx.load(str(int8))
    del model.metadata_props[:]  # as files from before recipes had versions (and records)
    onnx.save(model, str(int8))
    integrity.record_path(int8).unlink()
    capsys.readouterr()
    assert run(*args, "list") == cli.OK
    assert "present, 1 to rebuild" in capsys.readouterr().out

    def broken(inputs: Any, out: Path) -> None:
        raise RuntimeError("no disk today")

    with monkeypatch.context() as patch:
        patch.setitem(prepare.RECIPES, "quantize-int8", broken)
        assert run(*args, "pull", "all-minilm-l6-v2-int8") == cli.FAILURE
        assert "FAIL  all-minilm-l6-v2-int8: could not build again" in capsys.readouterr().err
        assert RECIPE_KEY not in read_metadata(int8)  # the older file serves on
    assert run(*args, "pull", "all-minilm-l6-v2-int8") == cli.OK
    assert read_metadata(int8)[RECIPE_KEY] == str(RECIPE)
    assert run(*args, "list") == cli.OK
    assert "to rebuild" not in capsys.readouterr().out
