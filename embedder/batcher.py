"""Micro-batching over a pool of runners: concurrent requests share ONNX Runtime runs, and the
runs of one request spread over the worker's cores.

A pre-fork worker serving one request at a time runs batch size 1, which leaves most of a
core's throughput unused on short texts. Here each model has one runner thread per core of
the worker, each with its own single-thread session (ORT releases the GIL while it runs).
Requests are tokenised in their own HTTP thread and queued. A free runner takes everything
queued so far (up to `max_texts`) as one group, plans its sub-batches by length (one long
text never pads short ones), and the runners share the sub-batches. There is no waiting
window: a lone request at idle starts at once, so idle latency is the compute time; under
load, requests arriving during a run form the next group.

Measured here (INT8 all-MiniLM-L6-v2, 2 cores, in-process): one session with two threads ran
request-sized batches at 121 texts/s and two single-thread sessions at 274, since small
sub-batches do not split well over threads; and one worker with a runner per core balances
the load itself, where kept-alive connections pinned to 2 workers split 3:1.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from embedder.encoder import Embeddings, Tokenized
from embedder.errors import ClientGone, Overloaded

CANCEL_POLL = 0.25  # seconds between checks that a waiting caller's client is still there


class Engine(Protocol):
    """What a runner needs of an embedder (see `embedder.encoder.Embedder`)."""

    dims: int

    def tokenize(self, texts: Sequence[str]) -> Tokenized: ...

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]: ...

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray: ...

    def finish(self, tok: Tokenized, pooled: np.ndarray) -> Embeddings: ...


@dataclass
class _Job:
    tok: Tokenized
    done: threading.Event = field(default_factory=threading.Event)
    result: Embeddings | None = None
    error: BaseException | None = None
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.tok.lengths)


@dataclass
class _Group:
    """Jobs that share runs: their texts are planned together."""

    jobs: list[_Job]
    tok: Tokenized
    out: np.ndarray
    pending: int  # sub-batches not yet run
    error: BaseException | None = None


@dataclass
class BatcherStats:
    runs: int = 0
    texts: int = 0
    jobs: int = 0
    queue_seconds: float = 0.0
    dropped: int = 0  # jobs dropped before they ran: their callers had gone


class Batcher:
    def __init__(
        self,
        engines: Sequence[Engine],
        *,
        name: str,
        max_texts: int = 64,
        max_queued_texts: int = 4096,
        max_wait: float = 10.0,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        if not engines:
            raise ValueError("a batcher needs at least one engine")
        self._engines = list(engines)
        self._observe = observe
        self.max_texts = max_texts
        self.max_queued_texts = max_queued_texts
        self.max_wait = max_wait
        self._jobs: deque[_Job] = deque()
        self._tasks: deque[tuple[_Group, np.ndarray]] = deque()
        self._queued_texts = 0  # texts not yet finished, in jobs or in groups
        self._ew_texts = 0.0  # decayed sums of texts run and runner-seconds spent
        self._ew_seconds = 0.0
        self._cv = threading.Condition()
        self.stats = BatcherStats()
        self._threads = [
            threading.Thread(target=self._loop, args=(k,), name=f"batcher-{name}-{k}", daemon=True)
            for k in range(len(self._engines))
        ]
        for t in self._threads:
            t.start()

    @property
    def rate(self) -> float:
        """texts/s all runners together manage on recent runs; 0 until the first run."""
        if self._ew_seconds <= 0:
            return 0.0
        return self._ew_texts / self._ew_seconds * len(self._engines)

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def embed(
        self,
        texts: Sequence[str],
        *,
        cancelled: Callable[[], bool] | None = None,
        reserved: bool = False,
    ) -> Embeddings:
        """`cancelled` is polled while the job waits in the queue: once true, the job is
        dropped and ClientGone raised. `reserved`: admitted already by `reserve`."""
        try:
            job = _Job(self._engines[0].tokenize(texts))
        except BaseException:
            if reserved:
                self.release(len(texts))
            raise
        with self._cv:
            if not reserved:
                self._admit(job.size)
                self._queued_texts += job.size
            self._jobs.append(job)
            self._cv.notify()
        if cancelled is None:
            job.done.wait()
        else:
            while not job.done.wait(CANCEL_POLL):
                if cancelled() and self._drop(job):
                    raise ClientGone("the client closed its connection; its texts were dropped")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _drop(self, job: _Job) -> bool:
        """Take a job out of the queue; False once it is running (its result is coming)."""
        with self._cv:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            self._queued_texts -= job.size
            self.stats.dropped += 1
            return True

    def reserve(self, n: int) -> None:
        """Admit `n` texts of work to come as one request (the calls of an RPC batch): refused
        as a whole, and counted in the queue until embedded with `reserved=True` or released."""
        with self._cv:
            self._admit(n)
            self._queued_texts += n

    def release(self, n: int) -> None:
        """Give back what a reservation did not use."""
        with self._cv:
            self._queued_texts -= n

    def _admit(self, n: int) -> None:
        """Refuse work that would wait longer than `max_wait` behind the queue (or overflow it),
        so overload gives a fast 503 instead of unbounded latency."""
        queued = self._queued_texts
        if not queued:
            return
        if queued + n > self.max_queued_texts:
            raise Overloaded(f"{queued} texts are already queued for this model; retry shortly")
        rate = self.rate
        if rate > 0:
            wait = (queued + n) / rate
            if wait > self.max_wait:
                raise Overloaded(
                    f"the queue for this model would take ~{wait:.0f} s; retry shortly",
                    retry_after=max(1, math.ceil(wait - self.max_wait)),
                )

    def _group(self) -> None:
        """Queued jobs, oldest first, up to max_texts (a larger job alone) become one group,
        its sub-batches the next tasks. Called with the lock held."""
        jobs = [self._jobs.popleft()]
        count = jobs[0].size
        while self._jobs and count + self._jobs[0].size <= self.max_texts:
            jobs.append(self._jobs.popleft())
            count += jobs[-1].size
        tok = jobs[0].tok
        for j in jobs[1:]:
            tok = tok + j.tok
        # Alone in the queue, the group may use every runner: balance it over them.
        idle = len(self._engines) if not self._jobs and not self._tasks else 1
        plan = self._engines[0].plan(tok.lengths, idle)
        out = np.empty((count, self._engines[0].dims), dtype=np.float32)
        group = _Group(jobs, tok, out, pending=len(plan))
        self._tasks.extend((group, rows) for rows in plan)
        now = time.monotonic()
        waits = [now - j.queued_at for j in jobs]
        self.stats.jobs += len(jobs)
        self.stats.texts += count
        self.stats.queue_seconds += sum(waits)
        if len(plan) > 1:
            self._cv.notify_all()  # idle runners can take the other sub-batches
        if self._observe is not None:
            self._observe(count, waits)

    def _next(self) -> tuple[_Group, np.ndarray]:
        with self._cv:
            while not self._tasks:
                if self._jobs:
                    self._group()
                else:
                    self._cv.wait()
            return self._tasks.popleft()

    def _loop(self, k: int) -> None:
        engine = self._engines[k]
        while True:
            group, rows = self._next()
            started = time.monotonic()
            if group.error is None:
                try:
                    group.out[rows] = engine.run_rows(group.tok, rows)
                except BaseException as exc:  # delivered to every caller of the group
                    group.error = exc
            elapsed = time.monotonic() - started
            with self._cv:
                self.stats.runs += 1
                self._ew_texts = 0.9 * self._ew_texts + len(rows)
                self._ew_seconds = 0.9 * self._ew_seconds + elapsed
                group.pending -= 1
                if group.pending:
                    del group, rows
                    continue
                self._queued_texts -= len(group.tok.lengths)
            self._deliver(engine, group)
            # Not kept while this runner waits for work: a group holds its requests' token
            # encodings (~1 GiB for 2048 texts of 8,000 characters, with their overflow).
            del group, rows

    @staticmethod
    def _deliver(engine: Engine, group: _Group) -> None:
        done: Embeddings | None = None
        if group.error is None:
            try:
                done = engine.finish(group.tok, group.out)
            except BaseException as exc:
                group.error = exc
        start = 0
        for j in group.jobs:
            end = start + j.size
            if done is None:
                j.error = group.error
            else:
                j.result = Embeddings(
                    vectors=np.ascontiguousarray(done.vectors[start:end]),
                    tokens=done.tokens[start:end],
                    truncated=done.truncated[start:end],
                )
            start = end
            j.done.set()
