"""What requests and runs did since the metrics' last flush, kept in the process.

A request used to write its samples straight into prometheus_client's values: in multiprocess
mode each write takes the library's process-wide lock and packs a float into a shared mmap'd
file, about eleven of them per lone request, each run cold. Here a request appends one record
per kind of event to a deque (atomic, no lock) and counts itself in and out of the in-flight
count under one lock; `Metrics.flush` drains the records into prometheus_client in bulk
(one write per sample touched) from the worker's refresh thread and before any scrape.

Nothing is lost between an append and the drain: `popleft` takes each record exactly once,
whichever thread drains.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedder.server.http.metrics import Metrics


class Tally:
    """One app's pending counts. Appended to by any thread; drained by `Metrics.flush`."""

    def __init__(self) -> None:
        # (route, model, falcon status, seconds) per answered request
        self.answered: deque[tuple[str, str, Any, float]] = deque()
        # (model, texts, tokens) per request the service did work for
        self.work: deque[tuple[str, int, int]] = deque()
        # (model, texts, seconds each request waited) per run
        self.batches: deque[tuple[str, int, list[float]]] = deque()
        self._lock = threading.Lock()
        self._flying: dict[str, int] = {}

    def enter(self, route: str) -> None:
        """A request on `route` is being served from now on."""
        with self._lock:
            self._flying[route] = self._flying.get(route, 0) + 1

    def leave(self, route: str) -> None:
        """... and is no longer (after its `enter`)."""
        with self._lock:
            self._flying[route] -= 1

    def flying(self) -> dict[str, int]:
        """Requests being served now, by route (every route ever entered)."""
        with self._lock:
            return dict(self._flying)


def write(t: Tally, m: Metrics, written: dict[str, int]) -> None:
    """Drain `t` into `m`'s prometheus_client values, summed: one write per sample touched,
    however many requests there were. `written` holds the in-flight values last written, by
    route (a gauge is written only when it changed). One at a time (`Metrics.flush`)."""
    requests: dict[tuple[str, str, Any], int] = {}
    durations: dict[str, list[float]] = {}
    for route, model, status, seconds in drain(t.answered):
        key = (route, model, status)
        requests[key] = requests.get(key, 0) + 1
        if route in durations:
            durations[route].append(seconds)
        else:
            durations[route] = [seconds]
    for (route, model, status), n in requests.items():
        m.child(m.requests, route, model, str(status).split(" ", 1)[0]).inc(n)
    for route, values in durations.items():
        observe_all(m.child(m.duration, route), values)
    work: dict[str, tuple[int, int]] = {}
    for model, texts, tokens in drain(t.work):
        was = work.get(model, (0, 0))
        work[model] = (was[0] + texts, was[1] + tokens)
    for model, (texts, tokens) in work.items():
        m.child(m.texts, model).inc(texts)
        m.child(m.tokens, model).inc(tokens)
    runs: dict[str, tuple[list[float], list[float]]] = {}
    for model, texts, queued in drain(t.batches):
        if model not in runs:
            runs[model] = ([], [])
        sizes, waits = runs[model]
        sizes.append(texts)
        waits.extend(queued)
    for model, (sizes, waits) in runs.items():
        observe_all(m.child(m.batch, model), sizes)
        observe_all(m.child(m.queue, model), waits)
    for route, flying in t.flying().items():
        if written.get(route) != flying:
            m.child(m.in_flight, route).set(flying)
            written[route] = flying


def drain(queue: deque[Any]) -> list[Any]:
    """Every record in `queue` now, each taken once even while others append or drain."""
    out = []
    try:
        while True:
            out.append(queue.popleft())
    except IndexError:
        return out


def observe_all(histogram: Any, values: list[float]) -> None:
    """`histogram.observe(v)` for each of `values` (a labelled child of a prometheus_client
    Histogram), written as one increment of the sum and one of each bucket touched. It reads
    the child's own bounds and values: tests/http/test_metrics.py checks that the result is
    what observe() gives, so a release of prometheus_client that changes them fails there."""
    if not values:
        return
    bounds = histogram._upper_bounds  # ascending, +Inf last; a value falls in the first >= it
    counts = [0] * len(bounds)
    for value in values:
        if value == value:  # observe() puts a NaN in no bucket
            counts[bisect_left(bounds, value)] += 1
    histogram._sum.inc(sum(values))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
