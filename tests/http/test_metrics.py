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


def test_in_flight_gauge_counts_a_request_while_it_is_served(
    client, starter_service, monkeypatch
) -> None:
    import threading

    from tests.polling import wait_until

    inside, release = threading.Event(), threading.Event()
    real = starter_service.embed

    def held(*args, **kwargs):
        inside.set()
        assert release.wait(60), "the test never released the request"
        return real(*args, **kwargs)

    monkeypatch.setattr(starter_service, "embed", held)
    body = orjson.dumps({"input": "held", "model": "all-minilm-l6-v2"})
    done: list[int] = []
    t = threading.Thread(
        target=lambda: done.append(
            client.simulate_post(
                "/v1/embeddings", body=body, headers={"Content-Type": "application/json"}
            ).status_code
        )
    )
    t.start()
    try:
        wait_until("the request reached the service", inside.is_set)
        gauge = 'embedder_requests_in_flight{route="/v1/embeddings"}'
        assert f"{gauge} 1.0" in client.simulate_get("/metrics").text
    finally:
        release.set()
        t.join(60)
    assert done == [200]
    assert f"{gauge} 0.0" in client.simulate_get("/metrics").text
