"""Say what runs: each model entry (/v1/models, status, models.describe) carries `backend`
and `compute_precision`, /metrics labels each model by them, and the wire's `precision` (what
the vectors are) stays the level's whatever computes them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import jsonschema
import orjson
import pytest

from embedder.backends.runtimes import BackendPolicy
from embedder.catalog import STARTER
from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.metrics import Metrics
from embedder.server.http.rpc_schemas import STATUS
from embedder.service import Service
from embedder.store.files import ModelStore

JSON = {"Content-Type": "application/json"}
PARA = "paraphrase-minilm-l3-v2"  # read inside its package: any models root serves it


def rpc(client: falcon.testing.TestClient, method: str) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "method": method, "id": 1})
    return client.simulate_post("/rpc", body=body, headers=JSON).json["result"]


def test_every_entry_says_what_computes_it(client: falcon.testing.TestClient) -> None:
    listed = client.simulate_get("/v1/models").json["data"]
    assert listed and all({"backend", "compute_precision"} <= set(m) for m in listed)
    for m in listed:  # the shared test service runs ONNX Runtime alone
        assert m["backend"] == "onnxruntime"
        assert m["compute_precision"] == m["precision"], m
    one = client.simulate_get("/v1/models/text-embedding-3-small").json
    assert (one["backend"], one["compute_precision"]) == ("onnxruntime", "int8")
    status = rpc(client, "status")
    jsonschema.validate(status, STATUS)
    assert all(m["backend"] == "onnxruntime" for m in status["models"])
    described = rpc(client, "models.describe")
    assert {m["id"]: m["compute_precision"] for m in described}["minilm-cosine-rerank"] == "fp32"


@pytest.fixture
def on_openvino(tmp_path: Path) -> Iterator[falcon.testing.TestClient]:
    store = ModelStore(tmp_path, STARTER, offline=True)
    service = Service(STARTER, store, models=[PARA], backends=BackendPolicy("openvino"))
    service.load_all()
    assert service.state() == "ok", service.health()
    metrics = Metrics()
    yield falcon.testing.TestClient(create_app(service, HttpOptions(), metrics=metrics))
    metrics.close()


def test_a_model_on_openvino_says_so_and_its_wire_precision_stays(
    on_openvino: falcon.testing.TestClient,
) -> None:
    (entry,) = on_openvino.simulate_get("/v1/models").json["data"]
    assert entry["backend"] == "openvino"
    assert entry["compute_precision"] in ("fp32", "bf16")  # BF16 where the CPU has the units
    assert entry["precision"] == "fp32"
    jsonschema.validate(rpc(on_openvino, "status"), STATUS)
    body = orjson.dumps({"input": ["one", "two"], "model": PARA})
    r = on_openvino.simulate_post("/v1/embeddings", body=body, headers=JSON)
    assert r.status_code == 200 and len(r.json["data"][0]["embedding"]) == 384
    text = on_openvino.simulate_get("/metrics").text
    line = re.search(r"^embedder_model_runtime\{([^}]*)\} 1\.0$", text, re.M)
    assert line is not None, text[-2000:]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line.group(1)))
    assert labels == {
        "model": PARA,
        "backend": "openvino",
        "compute_precision": entry["compute_precision"],
    }
