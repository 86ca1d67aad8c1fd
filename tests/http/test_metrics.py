"""/metrics in Prometheus text format (single process here; summed over workers live)."""

from __future__ import annotations

import orjson


def test_metrics_count_requests_texts_and_tokens(client) -> None:
    body = orjson.dumps({"input": ["one", "two"], "model": "all-minilm-l6-v2"})
    r = client.simulate_post(
        "/v1/embeddings", body=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    text = client.simulate_get("/metrics").text
    assert (
        'embedder_requests_total{model="all-minilm-l6-v2",route="/v1/embeddings",status="200"}'
        in text
    )
    assert 'embedder_texts_total{model="all-minilm-l6-v2"}' in text
    assert 'embedder_tokens_total{model="all-minilm-l6-v2"}' in text
    assert "embedder_request_duration_seconds_bucket" in text
    assert 'embedder_batch_size_bucket{le="1.0",model="all-minilm-l6-v2"}' in text
    assert 'embedder_model_ready{model="all-minilm-l6-v2"} 1.0' in text
    assert "embedder_worker_resident_memory_bytes" in text
