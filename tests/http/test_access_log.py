"""Request ids are echoed; the JSON access log has sizes and ids, never the texts."""

from __future__ import annotations

import json
import logging
import uuid

import falcon.testing
import orjson
import pytest

from embedder.server.http.app import HttpOptions, create_app
from embedder.service import Service

SECRET = "my private diagnosis is confidential"


def test_request_id_is_echoed_or_made(client) -> None:
    r = client.simulate_get("/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = client.simulate_get("/health").headers["x-request-id"]
    assert len(made) == 32 and uuid.UUID(made).hex == made and uuid.UUID(made).version == 4
    assert uuid.UUID(made).variant == uuid.RFC_4122
    assert client.simulate_get("/health").headers["x-request-id"] != made
    odd = client.simulate_get("/health", headers={"X-Request-Id": "bad id\n"}).headers
    assert odd["x-request-id"] != "bad id\n"


def test_json_access_log_has_no_text(
    starter_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(access_log=True)))
    with caplog.at_level(logging.INFO, logger="embedder.access"):
        body = orjson.dumps({"input": [SECRET, "second"], "model": "all-minilm-l6-v2"})
        r = c.simulate_post(
            "/v1/embeddings",
            body=body,
            headers={"Content-Type": "application/json", "X-Request-Id": "req-1"},
        )
        assert r.status_code == 200
        bad = c.simulate_post(
            "/v1/embeddings",
            body=orjson.dumps({"input": SECRET, "model": "nope"}),
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 404
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "embedder.access"]
    entries = [json.loads(line) for line in lines]
    ok = next(e for e in entries if e["request_id"] == "req-1")
    assert ok["route"] == "/v1/embeddings" and ok["model"] == "all-minilm-l6-v2"
    assert ok["texts"] == 2 and ok["tokens"] > 0 and ok["status"] == 200
    assert any(e["status"] == 404 for e in entries)
    assert all(SECRET not in line for line in lines)
    assert "confidential" not in caplog.text
