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

from embedder.server.http import metrics
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


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_request_writes_nothing_to_the_metrics_until_a_flush(
    starter_service: Service,
) -> None:
    """The request path leaves its counts in the process; the refresh thread or a scrape
    writes them (in multiprocess mode, prometheus_client's writes go to shared files)."""
    m = Metrics()
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=m))
    try:
        body = orjson.dumps({"input": ["one", "two"], "model": "all-minilm-l6-v2"})
        assert c.simulate_post("/v1/embeddings", body=body, headers=JSON).status_code == 200
        request = {"route": "/v1/embeddings", "model": "all-minilm-l6-v2", "status": "200"}
        model = {"model": "all-minilm-l6-v2"}
        route = {"route": "/v1/embeddings"}
        written = [
            sample(m, "embedder_requests_total", **request),
            sample(m, "embedder_texts_total", **model),
            sample(m, "embedder_tokens_total", **model),
            sample(m, "embedder_batch_size_count", **model),
            sample(m, "embedder_queue_seconds_count", **model),
            sample(m, "embedder_request_duration_seconds_count", **route),
            sample(m, "embedder_requests_in_flight", **route),
        ]
        assert written == [None] * len(written)
        m.flush()
        assert sample(m, "embedder_requests_total", **request) == 1
        assert sample(m, "embedder_texts_total", **model) == 2
        assert (sample(m, "embedder_tokens_total", **model) or 0) > 2
        assert (sample(m, "embedder_batch_size_count", **model) or 0) >= 1
        assert (sample(m, "embedder_queue_seconds_count", **model) or 0) >= 1
        assert sample(m, "embedder_request_duration_seconds_count", **route) == 1
        assert sample(m, "embedder_requests_in_flight", **route) == 0
    finally:
        m.close()


def test_counts_are_exact_under_concurrent_requests_and_flushes(
    starter_service: Service,
) -> None:
    """Requests from several threads while two others flush again and again: each count is
    written exactly once."""
    m = Metrics()
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), metrics=m))
    threads, each = 4, 40
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            m.flush()

    def client() -> None:
        for i in range(each):
            assert c.simulate_get("/health").status_code == 200
            m.observe_work("counted", 1, i)

    flushers = [threading.Thread(target=flusher) for _ in range(2)]
    clients = [threading.Thread(target=client) for _ in range(threads)]
    try:
        for t in flushers + clients:
            t.start()
        for t in clients:
            t.join(120)
        assert not any(t.is_alive() for t in clients)
    finally:
        stop.set()
        for t in flushers:
            t.join(60)
        m.close()  # the last flush
    health = {"route": "/health", "model": "", "status": "200"}
    assert sample(m, "embedder_requests_total", **health) == threads * each
    route = {"route": "/health"}
    assert sample(m, "embedder_request_duration_seconds_count", **route) == threads * each
    assert sample(m, "embedder_requests_in_flight", **route) == 0
    assert sample(m, "embedder_texts_total", model="counted") == threads * each
    assert sample(m, "embedder_tokens_total", model="counted") == threads * sum(range(each))


def test_a_bulk_flush_writes_what_observe_would(starter_service: Service) -> None:
    """The flush writes a histogram's buckets and sum itself (one write per bucket touched),
    reading prometheus_client's own fields: the result must be observe()'s, bucket edges,
    the overflow bucket and NaN included."""
    values = [0.0, 0.001, 0.0011, 0.0025, 0.3, 1.0, 29.9, 30.0, 31.0, 1e9, float("inf")]
    bulk, one_by_one = Metrics(), Metrics()
    try:
        bulk.observe_batch("m", 3, values)
        bulk.flush()
        reference = one_by_one.child(one_by_one.queue, "m")
        for v in values:
            reference.observe(v)
        one_by_one.child(one_by_one.batch, "m").observe(3)

        def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
            return [
                (s.name, s.labels, s.value)
                for family in (m.queue, m.batch)
                for metric in family.collect()
                for s in metric.samples
                if not s.name.endswith("_created")
            ]

        assert samples(bulk) == samples(one_by_one)
        bulk.observe_batch("nan", 1, [float("nan"), 0.5])
        bulk.flush()
        reference = one_by_one.child(one_by_one.queue, "nan")
        reference.observe(float("nan"))
        reference.observe(0.5)
        one_by_one.child(one_by_one.batch, "nan").observe(1)
        nan = [s for s in samples(bulk) if s[1].get("model") == "nan"]
        ref = [s for s in samples(one_by_one) if s[1].get("model") == "nan"]
        assert [s for s in nan if not s[0].endswith("_sum")] == [
            s for s in ref if not s[0].endswith("_sum")
        ]
    finally:
        bulk.close()
        one_by_one.close()


def test_close_flushes_what_was_counted_since_the_last_round(starter_service: Service) -> None:
    """A worker exits through close(): its last counts reach the files its siblings read."""
    m = Metrics()
    m.start_refresh(starter_service, every=60.0)
    m.observe_work("last", 3, 12)
    m.close()
    assert sample(m, "embedder_texts_total", model="last") == 3
    assert sample(m, "embedder_tokens_total", model="last") == 12


def test_counts_left_unflushed_stay_bounded(starter_service: Service) -> None:
    """Without a refresh thread or a scrape, the thread that counts flushes once the records
    reach a bound: an app's memory never grows with the requests it served."""
    m = Metrics()
    try:
        for _ in range(metrics.PENDING + 10):
            m.observe_work("bounded", 1, 2)
        assert len(m.tally.work) < metrics.PENDING
        assert (sample(m, "embedder_texts_total", model="bounded") or 0) >= metrics.PENDING
    finally:
        m.close()
    assert sample(m, "embedder_texts_total", model="bounded") == metrics.PENDING + 10
