"""Micro-batching: concurrent requests for one model share ONNX Runtime runs.

A pre-fork worker serving one request at a time runs batch size 1, which leaves most of a
core's throughput unused on short texts. Here each model has one runner thread: a request is
queued, and the runner takes everything queued so far (up to `max_texts`) into one run. A lone
request at idle runs at once — there is no waiting window — so idle latency is the compute
time; under load, requests arriving during a run form the next batch.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.encoder import Embeddings
from embedder.errors import Overloaded


@dataclass
class _Job:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: Embeddings | None = None
    error: BaseException | None = None
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    runs: int = 0
    texts: int = 0
    jobs: int = 0
    queue_seconds: float = 0.0


class Batcher:
    def __init__(
        self,
        run: Callable[[Sequence[str]], Embeddings],
        *,
        name: str,
        max_texts: int = 64,
        max_queued_texts: int = 4096,
        max_wait: float = 10.0,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self._run = run
        self._observe = observe
        self.max_texts = max_texts
        self.max_queued_texts = max_queued_texts
        self.max_wait = max_wait
        self.rate = 0.0  # texts/s of recent runs (EWMA); 0 until the first run
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._cv = threading.Condition()
        self.stats = BatcherStats()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        job = _Job(list(texts))
        with self._cv:
            self._admit(len(job.texts))
            self._queue.append(job)
            self._queued_texts += len(job.texts)
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _admit(self, n: int) -> None:
        """Refuse work that would wait longer than `max_wait` behind the queue (or overflow it),
        so overload gives a fast 503 instead of unbounded latency."""
        queued = self._queued_texts
        if not queued:
            return
        if queued + n > self.max_queued_texts:
            raise Overloaded(f"{queued} texts are already queued for this model; retry shortly")
        if self.rate > 0:
            wait = (queued + n) / self.rate
            if wait > self.max_wait:
                raise Overloaded(
                    f"the queue for this model would take ~{wait:.0f} s; retry shortly",
                    retry_after=max(1, math.ceil(wait - self.max_wait)),
                )

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def _take(self) -> list[_Job]:
        """Whole jobs, oldest first, up to max_texts (a larger job runs alone)."""
        with self._cv:
            while not self._queue:
                self._cv.wait()
            jobs = [self._queue.popleft()]
            count = len(jobs[0].texts)
            while self._queue and count + len(self._queue[0].texts) <= self.max_texts:
                job = self._queue.popleft()
                jobs.append(job)
                count += len(job.texts)
            self._queued_texts -= count
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            started = time.monotonic()
            texts = [t for j in jobs for t in j.texts]
            try:
                out = self._run(texts)
            except BaseException as exc:  # delivered to every caller of this run
                for j in jobs:
                    j.error = exc
                    j.done.set()
                continue
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = len(texts) / elapsed
            self.rate = rate if self.rate == 0 else 0.7 * self.rate + 0.3 * rate
            self.stats.runs += 1
            self.stats.texts += len(texts)
            self.stats.jobs += len(jobs)
            if self._observe is not None:
                self._observe(len(texts), [started - j.queued_at for j in jobs])
            start = 0
            for j in jobs:
                n = len(j.texts)
                j.result = Embeddings(
                    vectors=np.ascontiguousarray(out.vectors[start : start + n]),
                    tokens=out.tokens[start : start + n],
                    truncated=out.truncated[start : start + n],
                )
                self.stats.queue_seconds += started - j.queued_at
                start += n
                j.done.set()
