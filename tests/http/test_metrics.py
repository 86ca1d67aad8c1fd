"""/metrics in Prometheus text format (single process here; summed over workers live), and
the ownership of the metrics: one set per app, a refresh thread only for an owner who can stop
it, and a refresh that fails is reported, never the end of the thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import falcon.testing
import orjson
import pytest

from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.metrics import Metrics
from embedder.service import Service
from tests.polling import wait_until

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def metered(starter_service: Service) -> Iterator[falcon.testing.TestClient]:
    """An app with its own metrics: they count the service's work while the test runs."""
    m = Metrics()
    yield falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=m))
    m.close()


def refreshers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "metrics-refresh"]


def test_metrics_count_requests_texts_and_tokens(metered: falcon.testing.TestClient) -> None:
    body = orjson.dumps({"input": ["one", "two"], "model": "all-minilm-l6-v2"})
    r = metered.simulate_post("/v1/embeddings", body=body, headers=JSON)
    assert r.status_code == 200
    text = metered.simulate_get("/metrics").text
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
    assert "process_resident_memory_bytes" in text  # the process collectors, per app too


def test_in_flight_gauge_counts_a_request_while_it_is_served(
    metered: falcon.testing.TestClient, starter_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
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
            metered.simulate_post("/v1/embeddings", body=body, headers=JSON).status_code
        )
    )
    t.start()
    try:
        wait_until("the request reached the service", inside.is_set)
        gauge = 'embedder_requests_in_flight{route="/v1/embeddings"}'
        assert f"{gauge} 1.0" in metered.simulate_get("/metrics").text
    finally:
        release.set()
        t.join(60)
    assert done == [200]
    assert f"{gauge} 0.0" in metered.simulate_get("/metrics").text


def test_apps_keep_their_counts_apart(starter_service: Service) -> None:
    """Each app counts in its own registry: no names clash, nothing is shared."""
    first, second = Metrics(), Metrics()
    a = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=first))
    b = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=second))
    try:
        assert a.simulate_get("/health").status_code == 200
        line = 'embedder_requests_total{model="",route="/health",status="200"} 1.0'
        assert line in a.simulate_get("/metrics").text
        assert "/health" not in b.simulate_get("/metrics").text
    finally:
        first.close()
        second.close()


def test_an_app_without_given_metrics_starts_no_thread(starter_service: Service) -> None:
    """Nobody could stop it: the scrape refreshes the gauges instead."""
    before = set(refreshers())
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions()))
    assert "embedder_model_ready" in c.simulate_get("/metrics").text
    assert set(refreshers()) == before


def test_each_owner_has_one_refresh_thread_and_close_ends_it(starter_service: Service) -> None:
    before = set(refreshers())
    owned = [Metrics() for _ in range(3)]
    try:
        for m in owned:
            m.start_refresh(starter_service, every=60.0)
            create_app(starter_service, HttpOptions(), metrics=m)
        started = [t for t in refreshers() if t not in before]
        assert len(started) == len(owned)
        assert all(m.refreshing for m in owned)
        with pytest.raises(RuntimeError):
            owned[0].start_refresh(starter_service)  # one thread per Metrics, never two
    finally:
        for m in owned:
            m.close()
    assert not any(t.is_alive() for t in started)
    assert not any(m.refreshing for m in owned)
    assert set(refreshers()) <= before


def test_close_stops_counting_the_service_s_work(starter_service: Service) -> None:
    m = Metrics()
    create_app(starter_service, HttpOptions(), metrics=m)
    assert starter_service.on_work == m.observe_work
    m.close()
    assert starter_service.on_work is None and starter_service.on_batch is None


def test_a_failing_refresh_is_logged_and_kept_and_the_thread_goes_on(
    starter_service: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    m = Metrics()
    failing = threading.Event()
    failing.set()
    rounds: list[bool] = []
    real = m.refresh

    def flaky(service: Service) -> None:
        rounds.append(failing.is_set())
        if failing.is_set():
            raise RuntimeError("model status unreadable")
        real(service)

    monkeypatch.setattr(m, "refresh", flaky)
    with caplog.at_level(logging.ERROR, logger="embedder.metrics"):
        m.start_refresh(starter_service, every=0.01)
        try:
            wait_until("the error is there to ask for", lambda: m.refresh_error is not None)
            wait_until("several failed rounds", lambda: rounds.count(True) >= 3)
            assert m.refreshing
            assert "model status unreadable" in str(m.refresh_error)
            failing.clear()
            wait_until("a refresh that works again", lambda: m.refresh_error is None)
            assert m.refreshing
        finally:
            m.close()
    logged = [r for r in caplog.records if "refreshing the metrics failed" in r.getMessage()]
    assert len(logged) == 1  # once per distinct error, not every round
