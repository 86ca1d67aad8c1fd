"""Each model's queue is visible: `status` (and `models.describe`, /v1/models) give the texts
queued in the answering worker and the seconds of work they are; /metrics has both per model.
Before, neither showed it: a leaked reservation looked like an idle, healthy service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import falcon.testing
import jsonschema
import orjson
import pytest

from embedder.server.http import rpc_schemas as S
from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.metrics import Metrics
from embedder.service import Service

MODEL = "all-minilm-l6-v2-int8"
COSINE = "minilm-cosine-rerank"


@pytest.fixture
def metered(starter_service: Service) -> Iterator[falcon.testing.TestClient]:
    m = Metrics()
    yield falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=m))
    m.close()


def status(client: falcon.testing.TestClient) -> dict[str, Any]:
    msg = {"jsonrpc": "2.0", "method": "status", "id": 1}
    out: dict[str, Any] = client.simulate_post("/rpc", body=orjson.dumps(msg)).json["result"]
    jsonschema.validate(out, S.STATUS, cls=jsonschema.Draft202012Validator)
    return out


def queue_in_status(client: falcon.testing.TestClient, model: str) -> Any:
    return next(m for m in status(client)["models"] if m["id"] == model)["queue"]


def gauge(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    assert m, f"no {name} for {model} in the scrape"
    return float(m.group(1))


@pytest.fixture
def measured(starter_service: Service) -> Service:
    """The model has run at least once here, so it has a rate to estimate its queue's time."""
    starter_service.embed(["a run to measure the rate by"], starter_service.resolve(MODEL))
    return starter_service


def test_status_and_metrics_show_each_models_queue(
    metered: falcon.testing.TestClient, measured: Service
) -> None:
    batcher = measured.batchers[MODEL]
    assert queue_in_status(metered, MODEL) == {"texts": 0, "seconds": 0.0}
    with batcher.reserve(7, 5000.0):  # stands for texts other requests have queued
        queue = queue_in_status(metered, MODEL)
        assert queue["texts"] == 7
        assert queue["seconds"] == pytest.approx(5000.0 / batcher.rate, abs=1e-3)
        scrape = metered.simulate_get("/metrics").text
        assert gauge(scrape, "embedder_queued_texts", MODEL) == 7.0
        assert gauge(scrape, "embedder_queued_work_seconds", MODEL) == pytest.approx(
            5000.0 / batcher.rate, rel=1e-3
        )
        assert gauge(scrape, "embedder_queued_texts", "paraphrase-minilm-l3-v2") == 0.0
        listed = metered.simulate_get(f"/v1/models/{MODEL}").json
        assert listed["queue"]["texts"] == 7
    assert queue_in_status(metered, MODEL) == {"texts": 0, "seconds": 0.0}
    assert gauge(metered.simulate_get("/metrics").text, "embedder_queued_texts", MODEL) == 0.0


def test_a_model_without_a_queue_of_its_own_says_so(metered: falcon.testing.TestClient) -> None:
    """The cosine scorer runs on its embedding model's queue; it has none of its own."""
    assert queue_in_status(metered, COSINE) is None
    assert 'embedder_queued_texts{model="' + COSINE not in metered.simulate_get("/metrics").text
