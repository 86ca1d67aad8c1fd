"""ONNX Runtime's telemetry is off in every process the project starts: the variable is set
once, where the process is set up, before onnxruntime is imported (which is when ORT 1.29+
reads it and, without it, writes a device id and an event cache under the home directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from embedder.sessions import TELEMETRY_OFF, disable_ort_telemetry
from embedder.tools.launch import source_root


def test_it_is_set_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    disable_ort_telemetry(env)
    assert env == {TELEMETRY_OFF: "1"}
    chosen = {TELEMETRY_OFF: "0"}
    disable_ort_telemetry(chosen)
    assert chosen == {TELEMETRY_OFF: "0"}


def test_a_process_that_calls_it_first_leaves_no_telemetry_files(tmp_path: Path) -> None:
    """The CLI, the bench, gunicorn's master and the worker bootstrap call it before anything
    imports onnxruntime; a fresh process doing the same leaves the home directory empty."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != TELEMETRY_OFF and k != "CI"}
    env.update(HOME=str(home), PYTHONPATH=str(source_root()))
    script = (
        "from embedder.sessions import disable_ort_telemetry\n"
        "disable_ort_telemetry()\n"
        "import onnxruntime\n"
        "print(onnxruntime.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert list(home.rglob("*")) == []
