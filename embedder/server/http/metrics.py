"""GET /metrics: Prometheus text format, summed over every pre-forked worker.

gunicorn's master points PROMETHEUS_MULTIPROC_DIR at a fresh directory before forking, so
each worker writes its samples there and any worker's scrape sums them all (prometheus_client
multiprocess mode); outside gunicorn the process's own registry is served.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import falcon
import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as mp

from embedder.service import Service

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's metrics, named `embedder_*` (as TEI uses `te_*`)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "embedder_requests", "Requests by route, model and status", ["route", "model", "status"]
        )
        self.in_flight = Gauge(
            "embedder_requests_in_flight",
            "Requests being served now (routed, not yet answered), over all workers",
            ["route"],
            multiprocess_mode="livesum",
        )
        self.duration = Histogram(
            "embedder_request_duration_seconds", "Request latency", ["route"], buckets=_LATENCY
        )
        self.texts = Counter("embedder_texts", "Texts embedded or scored", ["model"])
        self.tokens = Counter("embedder_tokens", "Tokens embedded or scored", ["model"])
        self.batch = Histogram(
            "embedder_batch_size", "Texts per ONNX Runtime run", ["model"], buckets=_BATCH
        )
        self.queue = Histogram(
            "embedder_queue_seconds",
            "Time a request waits for its run",
            ["model"],
            buckets=_LATENCY,
        )
        self.load = Gauge(
            "embedder_model_load_seconds",
            "Time to download and load a model",
            ["model"],
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            "embedder_model_ready",
            "1 when the model is ready in every live worker",
            ["model"],
            multiprocess_mode="livemin",
        )
        self.rss = Gauge(
            "embedder_worker_resident_memory_bytes",
            "RSS of each worker",
            [],
            multiprocess_mode="liveall",
        )

    def observe_work(self, model: str, texts: int, tokens: int) -> None:
        self.texts.labels(model).inc(texts)
        self.tokens.labels(model).inc(tokens)

    def observe_batch(self, model: str, texts: int, queued: list[float]) -> None:
        self.batch.labels(model).observe(texts)
        for q in queued:
            self.queue.labels(model).observe(q)

    def refresh(self, service: Service) -> None:
        for model, st in service.status_by_id.items():
            self.ready.labels(model).set(1 if st.state == "ready" else 0)
            if st.load_seconds is not None:
                self.load.labels(model).set(st.load_seconds)
        self.rss.set(psutil.Process(os.getpid()).memory_info().rss)


_METRICS: Metrics | None = None
_LOCK = threading.Lock()


def metrics() -> Metrics:
    """One set per process (prometheus_client registers names globally)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            _METRICS = Metrics()
        return _METRICS


class MetricsMiddleware:
    """Counts every request (resources put the `model` they served on req.context)."""

    def __init__(self, service: Service, m: Metrics) -> None:
        self.m = m
        self.service = service
        service.on_batch = m.observe_batch
        service.on_work = m.observe_work
        thread = threading.Thread(target=self._refresh_loop, name="metrics", daemon=True)
        thread.start()

    def _refresh_loop(self) -> None:
        while True:
            self.m.refresh(self.service)
            time.sleep(2.0)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any
    ) -> None:
        route = req.uri_template
        if route and route != "/metrics":  # a scrape does not count itself
            self.m.in_flight.labels(route).inc()
            req.context.in_flight = route

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool
    ) -> None:
        flying = getattr(req.context, "in_flight", None)
        if flying is not None:
            self.m.in_flight.labels(flying).dec()
        started = getattr(req.context, "started", None)
        route = req.uri_template or "unmatched"
        if route in ("/metrics", "unmatched") or started is None:
            return
        model = str(getattr(req.context, "model", "") or "")
        status = str(resp.status).split(" ", 1)[0]
        self.m.requests.labels(route, model, status).inc()
        self.m.duration.labels(route).observe(time.perf_counter() - started)


class MetricsResource:
    def __init__(self, service: Service, m: Metrics, multiprocess: bool = False) -> None:
        self.service = service
        self.m = m
        self.multiprocess = multiprocess

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.m.refresh(self.service)
        if self.multiprocess:
            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            resp.data = generate_latest(registry)
        else:
            resp.data = generate_latest(REGISTRY)
        resp.content_type = CONTENT_TYPE_LATEST
