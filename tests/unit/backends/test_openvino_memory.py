"""One compiled model per model per worker: its runners share it (an infer request each), so a
worker's memory after load does not grow with its cores on OpenVINO either. Each layout in
fresh processes (the least of three: noise only ever adds), the runtime loaded first as a
worker has it after its first model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from embedder.service import Service

PROBE = """
import json, os, sys
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
from pathlib import Path
from typing import Any
import psutil
from embedder.backends import openvino as ov
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.catalog import STARTER
from embedder.loading import Opener
from embedder.memory import limit_arenas
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
root, model, runners = sys.argv[1], sys.argv[2], int(sys.argv[3])
rss = lambda: psutil.Process().memory_info().rss
store = ModelStore(Path(root), STARTER, offline=True)
runtimes = Runtimes(BackendPolicy("openvino"), store)
ov.bf16_units()  # the runtime and its CPU plugin loaded
opener = Opener(store, SessionConfig(threads=runners), RunLimits(), runtimes=runtimes)
limit_arenas(2)
base = rss()
batcher = opener.embedding(STARTER.get(model)).runner
sessions = {id(e.session) for e in batcher._engines}
backend = runtimes.runtime(model).backend
print(json.dumps({"model_bytes": rss() - base, "sessions": len(sessions), "backend": backend}))
"""


def _model_memory(root: Path, model: str, runners: int) -> dict[str, Any]:
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(root), model, str(runners)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        runs.append(dict(json.loads(out.stdout.strip().splitlines()[-1])))
    return min(runs, key=lambda r: r["model_bytes"])


@pytest.mark.slow
def test_compiled_model_memory_does_not_grow_with_runners(
    tmp_path: Path, starter_service: Service
) -> None:
    model = "all-minilm-l6-v2"
    shared = starter_service.store.root / model / "model.onnx"
    (tmp_path / model).mkdir()
    (tmp_path / model / "model.onnx").symlink_to(shared)  # compiled-model cache: tmp_path's
    one = _model_memory(tmp_path, model, 1)
    many = _model_memory(tmp_path, model, 16)
    assert one["backend"] == many["backend"] == "openvino"
    assert one["sessions"] == many["sessions"] == 1
    assert many["model_bytes"] <= 1.10 * one["model_bytes"], (one, many)
