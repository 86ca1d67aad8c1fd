"""The service's default runtime choice, live: `EMBEDDER_BACKEND=auto` times each level's
candidates at first start, keeps the fastest that passes its fidelity check, says so once
per model in the log, and reports it in `/v1/models`. What it picks depends on the CPU (BF16
on OpenVINO where the CPU has BF16 units, mostly ONNX Runtime elsewhere) and on its timing,
so this checks what holds whichever it picks: the vectors stay within the level's fidelity
rule of the engine of record's, and the log and the listing agree."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.service import Service
from embedder.tools.corpus import corpus
from tests.integration import server as srv

pytestmark = pytest.mark.integration

TEXTS = corpus(24, seed=11)
# An FP32 level computed in BF16 is used only at min cosine >= 0.9999 against FP32 (issue 25);
# an INT8 level may compute in BF16 of its FP32 source: then it is that close to the FP32
# level, and within the INT8 rule (min cosine >= 0.997) of the INT8 file's vectors.
MIN_COSINE = {"fp32": 0.9999, "int8": 0.997}
LOGGED = re.compile(r"model (\S+) computes on (onnxruntime|openvino) (fp32|bf16|int8) \(")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, built_root: Path) -> Iterator[srv.Server]:
    tmp = tmp_path_factory.mktemp("auto")
    server = srv.start(tmp, built_root, workers=1, backend=None)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _vectors(server: srv.Server, model: str) -> np.ndarray:
    body = {"input": TEXTS, "model": model, "encoding_format": "base64"}
    status, got = server.json("tcp", "POST", "/v1/embeddings", body)
    assert status == 200, got
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in got["data"]]
    return np.stack(rows)


def test_auto_serves_within_each_levels_fidelity_and_says_what_it_chose(
    served: srv.Server, starter_service: Service
) -> None:
    assert "EMBEDDER_BACKEND" not in served.env  # the service's default
    status, listed = served.json("tcp", "GET", "/v1/models")
    assert status == 200
    entries = {m["id"]: m for m in listed["data"]}
    logged = {m: (b, p) for m, b, p in LOGGED.findall(served.log.read_text(errors="replace"))}
    sessions = [spec for spec in STARTER.models if spec.onnx]  # the cosine scorer has none
    for spec in sessions:
        entry = entries[spec.id]
        assert logged.get(spec.id) == (entry["backend"], entry["compute_precision"]), logged
        if spec.kind != "embedding":
            continue
        want = starter_service.embed(TEXTS, starter_service.resolve(spec.id)).vectors
        got = _vectors(served, spec.id)
        cosine = float(np.min(np.sum(got * want, axis=1)))
        assert cosine >= MIN_COSINE[spec.precision], (spec.id, entry, cosine)
        if entry["backend"] == "onnxruntime" and entry["compute_precision"] == spec.precision:
            np.testing.assert_array_equal(got, want)  # the engine of record's own vectors
    log = served.log.read_text(errors="replace")
    assert len(LOGGED.findall(log)) == len(sessions), "one line per model per worker"
