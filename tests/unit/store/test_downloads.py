"""What a service says while model downloads fail, and once a retry succeeds (a fake Hub).

A machine without the Hub used to get the same ~450-character text once per model in /health,
per retry in the log, and twice per model on the dashboard; it now says the shared cause once.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import orjson
import pytest

from embedder.catalog import STARTER, BuiltFile, Catalog, HubFile, ModelFile, ModelSpec, SharedFile
from embedder.server.http.app import HttpOptions, create_app
from embedder.service import Service
from embedder.store.files import ModelStore
from tests.fakehub import DEFAULT_COMMIT, FakeHub
from tests.polling import wait_until

L3 = STARTER.get("paraphrase-minilm-l3-v2")


def from_hub(id: str, repo: str, level: int | None) -> ModelSpec:
    """The starter's paraphrase-MiniLM-L3-v2, its files published on a Hub repo instead."""
    files = tuple(ModelFile(f.name, HubFile(repo, DEFAULT_COMMIT, f.name)) for f in L3.files)
    return dataclasses.replace(L3, id=id, level=level, files=files)


QUANTIZED = dataclasses.replace(
    L3,
    id="a-int8",
    level=None,
    precision="int8",
    onnx="model_int8.onnx",
    files=(
        ModelFile("model_int8.onnx", BuiltFile("quantize-int8", (SharedFile("a", "model.onnx"),))),
        ModelFile("tokenizer.json", SharedFile("a", "tokenizer.json")),
    ),
)
CATALOG = Catalog(name="t", models=(from_hub("a", "o/a", 1), from_hub("b", "o/b", 2), QUANTIZED))


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(chunk_size=1024 * 1024) as h:
        yield h


def publish(hub: FakeHub, starter_store: ModelStore, repo: str) -> None:
    for f in L3.files:
        path = starter_store._resolve(L3, f)
        assert path is not None, f"the starter package with {f.name} is not installed"
        hub.add(repo, f.name, path.read_bytes())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rest_embed(svc: Service, model: str) -> falcon.testing.Result:
    client = falcon.testing.TestClient(create_app(svc, HttpOptions()))
    body = orjson.dumps({"input": "x", "model": model})
    return client.simulate_post("/v1/embeddings", body=body)


def test_a_shared_cause_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    svc = Service(CATALOG, ModelStore(tmp_path, CATALOG, endpoint=endpoint, offline=False))
    with caplog.at_level(logging.ERROR, logger="embedder.service"):
        svc.load_all()
    health = svc.health()
    assert health["status"] == "error" and set(health["errors"]) == {"a", "b", "a-int8"}
    (cause,) = health["failures"].values()
    assert "could not be reached" in cause and "`make run`" in cause
    assert "EMBEDDER_CATALOG=starter" in cause
    for model, text in health["errors"].items():
        assert cause not in text and text.endswith("failures.download)"), (model, text)
    # The INT8 model fails on another model's files: it says why it needs them.
    assert "a-int8 is quantized to INT8 here from a's FP32 graph" in health["errors"]["a-int8"]
    logged = [r.getMessage() for r in caplog.records]
    assert sum(cause in m for m in logged) == 1, logged
    # A REST caller asking for one model still gets the whole story in one message.
    r = rest_embed(svc, "b")
    assert r.status_code == 503 and cause in r.json["error"]["message"]
    models = {m["id"]: m for m in svc.status()["models"]}
    assert models["b"]["error"] == health["errors"]["b"]


def test_retry_after_while_a_download_retry_is_scheduled(tmp_path: Path, hub: FakeHub) -> None:
    svc = Service(CATALOG, ModelStore(tmp_path, CATALOG, endpoint=hub.url, offline=False))
    svc.loader.retry_first = 600.0
    svc.start()
    try:
        wait_until("a retry scheduled", lambda: "retry_in" in svc.health(), timeout=120)
        assert 0 < svc.health()["retry_in"] <= 600
        r = rest_embed(svc, "a")
        assert r.status_code == 503 and r.json["error"]["code"] == "model_unavailable"
        assert 1 <= int(r.headers["Retry-After"]) <= 600, r.headers
        assert "retried in" in r.json["error"]["message"]
    finally:
        svc.stop()


def test_a_download_that_succeeds_on_retry_leaves_no_error(
    tmp_path: Path, hub: FakeHub, starter_store: ModelStore
) -> None:
    """Issue 13: the old error ("... retrying in 30 s") stayed next to "ready"."""
    one = Catalog(name="t", models=(from_hub("a", "o/a", 1),))
    svc = Service(one, ModelStore(tmp_path, one, endpoint=hub.url, offline=False))
    svc.loader.retry_first = 0.05
    svc.start()
    try:
        assert not svc.wait(timeout=120), "loaded although the Hub has no files yet"
        assert svc.health()["errors"]["a"]
        publish(hub, starter_store, "o/a")
        wait_until("the retry loaded the model", lambda: svc.health()["status"] == "ok", 120)
        health = svc.health()
        assert "errors" not in health and "failures" not in health, health
        (model,) = svc.status()["models"]
        assert model["state"] == "ready" and model["error"] is None, model
    finally:
        svc.stop()
