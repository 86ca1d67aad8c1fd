"""One compiled model per model per worker: its runners share it (an infer request each), so a
worker's memory after load does not grow with its cores on OpenVINO either. Each layout in
fresh processes (the least of three: noise only ever adds), the runtime loaded first as a
worker has it after its first model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from embedder.service import Service
from tests.memory_probe import model_memory

# The runtime and its CPU plugin loaded, as a worker has them after its first model.
SETUP = """
from embedder.backends import openvino as ov
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.loading import Opener
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig
runtimes = Runtimes(BackendPolicy("openvino"), store)
ov.bf16_units()
opener = Opener(store, SessionConfig(threads=runners), RunLimits(), runtimes=runtimes)
"""
LOAD = """
batcher = opener.embedding(STARTER.get(model)).runner
sessions = {id(e.session) for e in batcher._engines}
streams = {int(e.session.compiled.get_property("NUM_STREAMS")) for e in batcher._engines}
facts = {"sessions": len(sessions), "backend": runtimes.runtime(model).backend,
         "streams": max(streams)}
"""


def _model_memory(root: Path, model: str, runners: int) -> dict[str, Any]:
    return model_memory(root, model, runners, setup=SETUP, load=LOAD, tries=3)


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
    # OpenVINO plans at most a stream per core it sees: on a small machine "16 runners" is
    # that many streams, not 16. Each stream holds its own fused attention kernels, so 16 real
    # streams hold about twice one's memory (docs/openvino.md): what this checks is that the
    # runners share one compiled model, not that streams are free.
    assert one["streams"] == 1 and 1 <= many["streams"] <= 16
    assert many["model_bytes"] <= 1.10 * one["model_bytes"], (one, many)
