"""GET /metrics: Prometheus text format, summed over every pre-forked worker.

gunicorn's master points PROMETHEUS_MULTIPROC_DIR at a fresh directory before forking, so
each worker writes its samples there and any worker's scrape sums them all (prometheus_client
multiprocess mode); outside gunicorn the app's own registry is served.

One `Metrics` per app, made by whoever builds the app and passed in: each has its own registry,
so several apps in one process (the tests) never clash over metric names. A worker's gauges
(ready, RSS) must stay current for the scrapes its siblings answer, so the owner may start a
refresh thread (`start_refresh`) and ends it with `close()`.

A request does not write to prometheus_client itself: it leaves its counts in the process
(`embedder.server.http.tally`), and `flush()` writes them in bulk, every refresh round (each
second) and right before this worker answers a scrape. So a scrape is exact for the worker
that answers it, and a sibling's counts (requests, latency, texts, tokens, runs, requests in
flight) are at most one refresh round old. `close()` flushes what is left; a worker killed
outright (SIGKILL, its timeout) loses the counts of its last round.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import astuple
from typing import Any

import falcon
import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as mp

from embedder.server.http.tally import Tally, write
from embedder.service import Service

log = logging.getLogger("embedder.metrics")

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# How often a worker's refresh thread writes its gauges and pending counts for the scrapes its
# siblings answer: the lag of those counts, well under a scrape interval.
REFRESH_EVERY = 1.0
# Records a deque holds before the thread that appends flushes them itself: a bound on memory
# for an app whose metrics have no refresh thread (and far above a second's requests).
PENDING = 4096
FLUSH_WAIT = 10.0  # s a scrape, a refresh or close waits for a flush under way


class Metrics:
    """One app's metrics, named `embedder_*` (as TEI uses `te_*`). With `multiprocess` the
    scrape sums every worker's samples (prometheus_client writes them to files under
    PROMETHEUS_MULTIPROC_DIR); otherwise it serves this object's registry, with the usual
    process_* and python_* collectors."""

    def __init__(self, *, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        if not multiprocess:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        reg = self.registry
        self.requests = Counter(
            "embedder_requests",
            "Requests by route, model and status",
            ["route", "model", "status"],
            registry=reg,
        )
        self.in_flight = Gauge(
            "embedder_requests_in_flight",
            "Requests being served now (routed, not yet answered), over all workers",
            ["route"],
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.duration = Histogram(
            "embedder_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=_LATENCY,
            registry=reg,
        )
        self.texts = Counter("embedder_texts", "Texts embedded or scored", ["model"], registry=reg)
        self.tokens = Counter(
            "embedder_tokens", "Tokens embedded or scored", ["model"], registry=reg
        )
        self.batch = Histogram(
            "embedder_batch_size",
            "Texts per ONNX Runtime run",
            ["model"],
            buckets=_BATCH,
            registry=reg,
        )
        self.queue = Histogram(
            "embedder_queue_seconds",
            "Time a request waits for its run",
            ["model"],
            buckets=_LATENCY,
            registry=reg,
        )
        self.load = Gauge(
            "embedder_model_load_seconds",
            "Time to download and load a model",
            ["model"],
            multiprocess_mode="max",
            registry=reg,
        )
        self.ready = Gauge(
            "embedder_model_ready",
            "1 when the model is ready in every live worker",
            ["model"],
            multiprocess_mode="livemin",
            registry=reg,
        )
        self.queued = Gauge(
            "embedder_queued_texts",
            "Texts queued for a model (reserved, waiting or running), over all workers",
            ["model"],
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.queued_work = Gauge(
            "embedder_queued_work_seconds",
            "Seconds of work queued for a model at the rate of its recent runs (0 before its "
            "first run); the longest of any worker's queue",
            ["model"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.runtime = Gauge(
            "embedder_model_runtime",
            "1 for the runtime and precision that compute a model in a live worker",
            ["model", "backend", "compute_precision"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.rss = Gauge(
            "embedder_worker_resident_memory_bytes",
            "RSS of each worker",
            [],
            multiprocess_mode="liveall",
            registry=reg,
        )

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed: Service | None = None
        self.refresh_error: Exception | None = None  # the refresh thread's, until it succeeds
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.tally = Tally()
        self._flushing = threading.Lock()  # one flush at a time: the last one's gauge stands
        self._flying_written: dict[str, int] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: labels() validates and takes a lock on every call.
        Label values are bounded (routes, catalog models, statuses), so is this."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_work(self, model: str, texts: int, tokens: int) -> None:
        work = self.tally.work
        work.append((model, texts, tokens))
        if len(work) >= PENDING:
            self.flush(wait=0)

    def observe_batch(self, model: str, texts: int, queued: list[float]) -> None:
        batches = self.tally.batches
        batches.append((model, texts, queued))
        if len(batches) >= PENDING:
            self.flush(wait=0)

    def flush(self, wait: float = FLUSH_WAIT) -> bool:
        """Write the counts requests and runs left since the last flush, summed: one write per
        sample touched, however many requests there were. One flush at a time: waits up to
        `wait` seconds for another to end (a request's thread waits for none: the flush under
        way takes its records too); False, with nothing written, when it did not end."""
        if not self._flushing.acquire(timeout=wait):
            if wait > 0:
                log.warning("metrics not written: another flush ran over %.0f s", wait)
            return False
        try:
            write(self.tally, self, self._flying_written)
            return True
        finally:
            self._flushing.release()

    def refresh(self, service: Service) -> None:
        """The gauges now, then the pending counts: a flush that fails (logged by the caller)
        leaves the gauges current."""
        for model, st in service.status_by_id.items():
            self.ready.labels(model).set(1 if st.state == "ready" else 0)
            if st.load_seconds is not None:
                self.load.labels(model).set(st.load_seconds)
            if st.runtime is not None:
                self.runtime.labels(model, *astuple(st.runtime)).set(1)
        for model, batcher in list(service.batchers.items()):
            texts, seconds = batcher.backlog()
            self.child(self.queued, model).set(texts)
            self.child(self.queued_work, model).set(seconds or 0.0)
        self.rss.set(psutil.Process(os.getpid()).memory_info().rss)
        self.flush()

    def exposition(self) -> bytes:
        """The scrape's body: every worker's samples, or this registry's."""
        if self.multiprocess:
            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def observe(self, service: Service) -> None:
        """Count `service`'s work (texts, tokens, batches) here, until `close()`."""
        service.on_batch = self.observe_batch
        service.on_work = self.observe_work
        self._observed = service

    @property
    def refreshing(self) -> bool:
        """True while the refresh thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start_refresh(self, service: Service, every: float = REFRESH_EVERY) -> None:
        """Refresh `service`'s gauges and flush the pending counts every `every` seconds in a
        thread until `close()`, so the scrapes a sibling worker answers see this worker's
        state. Only the owner of this object starts it: it is the one that can stop it."""
        if self._thread is not None:
            raise RuntimeError("this Metrics already has a refresh thread")
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(service, every), name="metrics-refresh", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the refresh thread (waiting at most `timeout` seconds for it), stop counting
        the service's work (unless another app's metrics count it now) and flush what was
        counted."""
        self._stop.set()
        service, self._observed = self._observed, None
        if service is not None and service.on_batch == self.observe_batch:
            service.on_batch = None
        if service is not None and service.on_work == self.observe_work:
            service.on_work = None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("metrics refresh thread still running %.0f s after close", timeout)
        try:
            self.flush()
        except Exception:
            log.exception("flushing the metrics on close failed")

    def _refresh_loop(self, service: Service, every: float) -> None:
        """Never ends on an error: it is logged (once until it changes) and kept in
        `refresh_error` for whoever asks, and the next round tries again."""
        while True:
            try:
                self.refresh(service)
            except Exception as exc:
                if repr(exc) != repr(self.refresh_error):
                    log.exception("refreshing the metrics failed; trying again in %g s", every)
                self.refresh_error = exc
            else:
                if self.refresh_error is not None:
                    log.info("refreshing the metrics works again")
                self.refresh_error = None
            if self._stop.wait(every):
                return


class MetricsMiddleware:
    """Counts every request (resources put the `model` they served on req.context)."""

    def __init__(self, m: Metrics) -> None:
        self.m = m
        self.tally = m.tally

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any
    ) -> None:
        route = req.uri_template
        if route and route != "/metrics":  # a scrape does not count itself
            self.tally.enter(route)
            req.context.in_flight = route

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool
    ) -> None:
        flying = getattr(req.context, "in_flight", None)
        if flying is not None:
            self.tally.leave(flying)
        started = getattr(req.context, "started", None)
        route = req.uri_template or "unmatched"
        if route in ("/metrics", "unmatched") or started is None:
            return
        model = str(getattr(req.context, "model", "") or "")
        answered = self.tally.answered
        answered.append((route, model, resp.status, time.perf_counter() - started))
        if len(answered) >= PENDING:
            self.m.flush(wait=0)


class MetricsResource:
    def __init__(self, service: Service, m: Metrics) -> None:
        self.service = service
        self.m = m

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.m.refresh(self.service)
        resp.data = self.m.exposition()
        resp.content_type = CONTENT_TYPE_LATEST
