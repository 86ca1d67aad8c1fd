"""Micro-batching over a pool of runners: concurrent requests share ONNX Runtime runs, and the
runs of one request spread over the worker's cores.

A pre-fork worker serving one request at a time runs batch size 1, which leaves most of a
core's throughput unused on short texts. Here each model has one runner thread per core of
the worker (ORT releases the GIL while it runs), and as many run slots: the worker's core
budget, which no moment exceeds (runner threads and callers together). Requests are
tokenised in their own HTTP thread. A request that finds the model idle (nothing queued, no
sub-batch waiting) and a slot free runs in its own thread: it plans its rows as a runner
would, runs the first sub-batch itself and leaves any others to the runners. A lone request
then costs no hand-over to a runner and back: two thread wake-ups fewer, and no runner's
code run cold. A request that finds work queued or every slot busy is queued: a free runner
takes everything queued so far (up to `max_texts`) as one group, plans its sub-batches by
length (one long text never pads short ones), and the runners share the sub-batches. There
is no waiting window: a lone request at idle starts at once, so idle latency is the compute
time; under load, requests arriving during the runs queue and form the next group, so
batching under load is the runners' as before. The same pool serves embedding models and
cross-encoders: the batcher only moves rows.

Why the caller runs its first sub-batch rather than only a request of one sub-batch: the plan
is the one a runner would make, the caller would otherwise only wait, and the hop is saved on
every request that finds the model idle; the other sub-batches go to the runners, which take
them on the other slots at once. The price: a run that never ends holds its own caller, which
then cannot time out (a runner's stuck run let its caller go after `max_request_wait`); at
most one HTTP thread per slot, and the model serves nothing until such a run ends either way.

The lock guards the queue and the slots only: a runner takes its group's jobs under it, then
joins their tokens, plans the sub-batches and tells the metrics outside it (for a 2048-text
request that is real work, and every caller queueing and every run finishing needs the
lock). `close` stops the runners when the model stops serving.

Runners of single-thread sessions, not one session with a thread per core: small
sub-batches do not split well over threads (two single-thread runners ran more than twice the
texts/s of one two-thread session; docs/performance.md); and one worker with a runner per
core balances the load itself, where kept-alive connections pinned to several workers do not.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from embedder.errors import ClientGone, ModelUnavailable, Overloaded, TimedOut
from embedder.planning import text_cost
from embedder.reservation import Reservation as Reservation
from embedder.tokens import Tokenized

log = logging.getLogger("embedder.batcher")

CANCEL_POLL = 0.25  # seconds between checks that a waiting caller's client is still there


class Engine(Protocol):
    """What a runner runs: the planner and one run over chosen rows (a `TextEncoder`, or a
    cross-encoder's `PairScorer`). Called from several threads at once (runners, and callers
    running their own sub-batch); each engine object runs one sub-batch at a time."""

    dims: int

    def plan(self, lengths: Sequence[int], parallel: int = 1) -> list[np.ndarray]: ...

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray: ...


class Runner(Protocol):
    """What a model's callers run their rows through: the service's `Batcher`, or `Inline` for
    an engine used on its own (tools and tests)."""

    def run(
        self,
        count: int,
        tokenize: Callable[[], Tokenized],
        *,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> tuple[Tokenized, np.ndarray]: ...


class Inline:
    """Runs a request's sub-batches one after another in the caller's thread: nothing is
    queued, so there is nothing to admit, reserve or drop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(
        self,
        count: int,
        tokenize: Callable[[], Tokenized],
        *,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> tuple[Tokenized, np.ndarray]:
        tok = tokenize()
        out = np.empty((len(tok.lengths), self.engine.dims), dtype=np.float32)
        for rows in self.engine.plan(tok.lengths):
            out[rows] = self.engine.run_rows(tok, rows)
        return tok, out


class _Done:
    """A job's one-shot "done" on a single bare lock, held until the runner releases it.

    threading.Event waits on a Condition: the woken caller must also take the Condition's own
    lock back, one more hand-over on every request's way out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """True once set (at once if it was); False after `timeout` seconds."""
        if self._set:
            return True
        if self._lock.acquire(timeout=timeout):
            self._lock.release()  # so that any later wait passes too
            return True
        return self._set


@dataclass(eq=False)
class _Job:
    tok: Tokenized
    cost: float  # in `text_cost` units
    queued_at: float
    done: _Done = field(default_factory=_Done)
    rows: np.ndarray | None = None  # this job's rows of its group's output
    error: BaseException | None = None

    @property
    def size(self) -> int:
        return len(self.tok.lengths)


@dataclass(eq=False)
class _Group:
    """Jobs that share runs: their texts are planned together."""

    jobs: list[_Job]
    tok: Tokenized
    out: np.ndarray
    pending: int  # sub-batches not yet run
    waited: float = 0.0  # seconds its jobs spent queued, in all
    error: BaseException | None = None


@dataclass
class BatcherStats:  # written under the batcher's lock; `Batcher.stats` hands out copies
    runs: int = 0
    texts: int = 0
    jobs: int = 0
    queue_seconds: float = 0.0
    dropped: int = 0  # jobs dropped before they ran: their callers had gone


class Batcher:
    """`max_wait` bounds the work a request may find ahead of it (estimated from the rate of
    recent runs, in cost units, its own work included); `max_request_wait` bounds how long a
    caller waits in any case (a stuck run must not hold HTTP threads for good)."""

    def __init__(
        self,
        engines: Sequence[Engine],
        *,
        name: str,
        max_texts: int = 64,
        max_queued_texts: int = 4096,
        max_wait: float = 10.0,
        max_request_wait: float = 60.0,
        observe: Callable[[int, list[float]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not engines:
            raise ValueError("a batcher needs at least one engine")
        self.name = name
        self._engines = list(engines)
        self._closed = False  # see `close`
        self._observe = observe
        self._clock = clock
        self.max_texts = max_texts
        self.max_queued_texts = max_queued_texts
        self.max_wait = max_wait
        self.max_request_wait = max_request_wait
        self._jobs: deque[_Job] = deque()
        self._tasks: deque[tuple[_Group, np.ndarray]] = deque()
        self._queued_texts = 0  # texts not yet finished, in jobs or in groups
        self._queued_cost = 0.0  # their cost
        self._ew_cost = 0.0  # decayed sums of cost run and runner-seconds spent
        self._ew_seconds = 0.0
        self._cv = threading.Condition()
        # Free run slots, each the engine its run uses (one run per engine object at a time):
        # the engine used last comes first, its caches the warmest.
        self._idle: list[Engine] = self._engines[::-1]
        self._planning = 0  # groups a runner took from the queue and is planning (no slot yet)
        self._stats = BatcherStats()
        self._threads = [
            threading.Thread(target=self._loop, args=(k,), name=f"batcher-{name}-{k}", daemon=True)
            for k in range(len(self._engines))
        ]
        for t in self._threads:
            t.start()

    @property
    def rate(self) -> float:
        """Cost units/s all runners together manage on recent runs; 0 until the first run."""
        if self._ew_seconds <= 0:
            return 0.0
        return self._ew_cost / self._ew_seconds * len(self._engines)

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    @property
    def stats(self) -> BatcherStats:
        """A consistent copy of the counters (they change under the lock, in runner threads)."""
        with self._cv:
            return replace(self._stats)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop serving: what is queued fails at once with ModelUnavailable (so is anything
        submitted later), a run in progress finishes, and the runner threads end. Waits at most
        `timeout` seconds for them and for the runs in callers' threads (a run cannot be cut
        short); True once all have ended."""
        with self._cv:
            if not self._closed:
                self._closed = True
                error = self._stopped()
                jobs = list(self._jobs)
                self._jobs.clear()
                for group, _ in self._tasks:  # sub-batches that will not run
                    group.error = group.error or error
                    group.pending -= 1
                    if not group.pending:
                        self._finish(group.jobs, group.error, group.out)
                self._tasks.clear()
                self._finish(jobs, error)
                self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            idle = self._cv.wait_for(
                lambda: len(self._idle) == len(self._engines),
                max(0.0, deadline - time.monotonic()),
            )
        me = threading.current_thread()
        return idle and not any(t.is_alive() for t in self._threads if t is not me)

    def _stopped(self) -> ModelUnavailable:
        return ModelUnavailable(f"model {self.name} has stopped serving", param="model")

    def backlog(self) -> tuple[int, float | None]:
        """What is queued now, reservations included: its texts, and the seconds its work
        takes at the rate of recent runs (None before the first run)."""
        with self._cv:
            rate = self.rate
            return self._queued_texts, (self._queued_cost / rate if rate > 0 else None)

    def run(
        self,
        count: int,
        tokenize: Callable[[], Tokenized],
        *,
        cancelled: Callable[[], bool] | None = None,
        reserved: Reservation | None = None,
    ) -> tuple[Tokenized, np.ndarray]:
        """Tokenise `count` rows in the caller's thread, run them here if the model is idle
        (`_inline`) or else queue them, and wait (bounded) for their output. Queue space is
        held before tokenising: `reserved` (see `reserve`), or else reserved here on the rows'
        count; the job takes it over once queued or running, and it is given back on any way
        out before that.

        `cancelled` is polled while the job waits in the queue: once true (its client has
        gone), the job is dropped and ClientGone raised; a job already running finishes."""
        with reserved if reserved is not None else self.reserve(count) as held:
            tok = tokenize()
            job = _Job(tok, sum(text_cost(n) for n in tok.lengths), self._clock())
            with self._cv:
                if self._closed:
                    raise self._stopped()  # `held` is given back on the way out
                self._take_over(held, job)
                bound = self.request_bound(self._queued_cost)
                engine = self._idle.pop() if self._idle and not self._busy_ahead() else None
                if engine is None:
                    self._jobs.append(job)
                    if self._idle:
                        self._cv.notify()  # else a slot's return wakes a runner
                spread = len(self._idle) + 1
        if engine is not None:
            self._inline(job, engine, spread)
        self._wait(job, cancelled, bound)
        if job.error is not None:
            raise job.error
        assert job.rows is not None
        return tok, job.rows

    def request_bound(self, cost: float) -> float:
        """How long a caller may wait for `cost` units of work (its own and what is ahead):
        `max_request_wait`, plus four times the work's expected time at the measured rate. A
        large request alone (which admission lets in) may take minutes on a small machine
        (100 documents of 512 tokens on bge-reranker-base, 2 cores: about a minute); a stuck
        run still ends its callers' wait. Before the first run there is no rate to go by."""
        rate = self.rate
        return self.max_request_wait + (4.0 * cost / rate if rate > 0 else 0.0)

    def _wait(self, job: _Job, cancelled: Callable[[], bool] | None, bound: float) -> None:
        """Until the job is done, its caller's client has gone (ClientGone), or `bound`
        seconds have passed (TimedOut)."""
        deadline = time.monotonic() + bound
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon(job, bound)
                return
            if job.done.wait(min(left, CANCEL_POLL) if cancelled is not None else left):
                return
            if cancelled is not None and cancelled() and self._unqueue(job, dropped=True):
                raise ClientGone("the client closed its connection; its texts were dropped")

    def _unqueue(self, job: _Job, *, dropped: bool = False) -> bool:
        """Take a job out of the queue (its texts no longer count against admission; with
        `dropped`, counted as dropped); False once it is running or done (its result is
        coming)."""
        with self._cv:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            self._queued_texts -= job.size
            self._queued_cost -= job.cost
            self._stats.dropped += dropped
            return True

    def reserve(
        self, n: int, cost: float = 0.0, *, whole: bool = False, mine: int = 0
    ) -> Reservation:
        """Admit `n` rows of work to come, of estimated `cost`, before they are tokenised
        (Overloaded if refused), and hold their queue space until `run` takes it over or the
        `Reservation` gives it back. `whole`: several calls admitted as one request (an RPC
        batch), for good; otherwise what they really cost is admitted again once known.
        `mine`: texts the same request holds on this model already (its RPC batch's)."""
        with self._cv:
            self._admit(n, cost, mine=mine)
            self._queued_texts += n
            self._queued_cost += cost
        return Reservation(self, n, cost, recheck=not whole, mine=mine)

    def _give_back(self, n: int, cost: float) -> None:
        with self._cv:
            self._queued_texts -= n
            self._queued_cost -= cost
            if not self._queued_texts:
                self._queued_cost = 0.0  # no float drift while idle

    def _take_over(self, held: Reservation, job: _Job) -> None:
        """The job holds `held`'s queue space from now on, counted at its real size and cost.
        Called with the lock held."""
        if held.batcher is not self:
            raise ValueError(f"a reservation on {held.batcher.name} used on {self.name}")
        texts, cost = job.size - held.texts, job.cost - held.cost
        if held.recheck and (texts > 0 or cost > 0):
            self._admit(max(texts, 0), max(cost, 0.0), mine=held.texts + held.mine)
        self._queued_texts += texts
        self._queued_cost += cost
        held.texts, held.cost = 0, 0.0

    def _abandon(self, job: _Job, bound: float) -> None:
        """The caller stops waiting: a job still queued leaves the queue; one already running
        finishes unseen."""
        if job.done.is_set():
            return
        self._unqueue(job)
        raise TimedOut(
            f"model {self.name} did not finish this request within {bound:.0f} s; retry shortly",
            retry_after=max(1, math.ceil(self.max_wait)),
        )

    def _admit(self, n: int, cost: float, mine: int = 0) -> None:
        """Refuse `n` more rows of `cost` if the work would wait longer than `max_wait` (its
        own run included) or overflow the queue, so overload gives a fast 503 instead of
        unbounded latency. An idle model takes any request: a large one alone could never run
        otherwise. `mine`: texts of the same request counted already (its reservation)."""
        if self._closed:
            raise self._stopped()
        queued = self._queued_texts - mine
        if not queued:
            return
        if self._queued_texts + n > self.max_queued_texts:
            raise Overloaded(f"{queued} texts are already queued for this model; retry shortly")
        rate = self.rate
        if rate > 0:
            wait = (self._queued_cost + cost) / rate
            if wait > self.max_wait:
                raise Overloaded(
                    f"the queue for this model would take ~{wait:.0f} s; retry shortly",
                    retry_after=max(1, math.ceil(wait - self.max_wait)),
                )

    def _take(self) -> tuple[list[_Job], int]:
        """Queued jobs, oldest first, up to max_texts (a larger job alone), to become one group;
        and over how many runners to spread it. Called with the lock held."""
        jobs = [self._jobs.popleft()]
        count = jobs[0].size
        while self._jobs and count + self._jobs[0].size <= self.max_texts:
            jobs.append(self._jobs.popleft())
            count += jobs[-1].size
        # Alone in the queue, the group may use every runner: balance it over them.
        spread = len(self._engines) if not self._jobs and not self._tasks else 1
        return jobs, spread

    def _plan(self, jobs: list[_Job], spread: int) -> tuple[_Group, list[np.ndarray]]:
        """The taken jobs as one group and its sub-batches. Runs without the lock: the jobs
        are no longer in the queue (a caller giving up finds its job running), yet still
        counted in it until they finish."""
        count = sum(j.size for j in jobs)
        tok = jobs[0].tok
        for j in jobs[1:]:
            tok = tok + j.tok
        plan = self._engines[0].plan(tok.lengths, spread)
        if not plan:
            raise ValueError(f"the planner gave no sub-batches for {count} rows")
        out = np.empty((count, self._engines[0].dims), dtype=np.float32)
        now = self._clock()
        waits = [now - j.queued_at for j in jobs]
        if self._observe is not None:
            self._observe(count, waits)
        return _Group(jobs, tok, out, pending=len(plan), waited=sum(waits)), plan

    def _finish(
        self, jobs: list[_Job], error: BaseException | None, out: np.ndarray | None = None
    ) -> None:
        """Hand every job its rows (or the error) and take its work off the queue's count.
        Called with the lock held."""
        start = 0
        for j in jobs:
            end = start + j.size
            if error is None and out is not None:
                j.rows = out[start:end]
            else:
                j.error = error
            start = end
            self._queued_texts -= j.size
            self._queued_cost -= j.cost
            j.done.set()
        if not self._queued_texts:  # nothing queued, running or reserved
            self._queued_cost = 0.0  # no float drift while idle

    def _inline(self, job: _Job, engine: Engine, spread: int) -> None:
        """Plan a job that found the model idle, balanced over the `spread` slots that were
        free (its own included: a run in progress on another would hold its share back),
        queue its other sub-batches for the runners and run the first one here, on `engine`
        (a slot taken for it). Its errors go to the job as on the runners' path; one that is
        no Exception (an interrupt) is raised here once the slot and the counts are back in
        order."""
        try:
            group, plan = self._plan([job], spread)
        except BaseException as exc:
            with self._cv:
                self._give(engine)
                self._finish([job], exc)
            return
        with self._cv:
            if self._closed:  # closed while planning: the run has not started
                self._give(engine)
                self._finish([job], self._stopped())
                return
            self._queue_group([job], (group, plan[1:]), own=0)
        failed = self._run(engine, group, plan[0])
        if failed is not None and not isinstance(failed, Exception):
            raise failed

    def _next(self) -> tuple[Engine, _Group, np.ndarray] | None:
        """The next sub-batch to run and the slot's engine to run it on (the slot is taken);
        None once the batcher is closed.

        With no sub-batch waiting, the runner takes queued jobs and plans them outside the
        lock (`_plan`), then queues their sub-batches and takes the first one to run once a
        slot is free. Planning takes no slot: it is not a run."""
        planned: tuple[list[_Job], tuple[_Group, list[np.ndarray]] | BaseException] | None = None
        while True:
            with self._cv:
                if planned is not None:
                    self._planning -= 1
                    self._queue_group(*planned)
                    planned = None
                while not (self._idle and (self._tasks or self._jobs)) and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return None
                if self._tasks:
                    return self._idle.pop(), *self._tasks.popleft()
                jobs, spread = self._take()
                self._planning += 1
            try:
                planned = jobs, self._plan(jobs, spread)
            except BaseException as exc:  # fails the taken jobs (their callers get it), not us
                log.exception("batcher %s: planning a group failed", self.name)
                planned = jobs, exc

    def _queue_group(
        self,
        jobs: list[_Job],
        planned: tuple[_Group, list[np.ndarray]] | BaseException,
        *,
        own: int = 1,
    ) -> None:
        """The planned group's sub-batches become the next tasks (a caller running its first
        one itself queues the others); a failed plan (or one that ended after `close`) fails
        its jobs instead. `own`: how many of them the calling thread runs itself (a runner
        takes its first from the tasks). Called with the lock held."""
        if isinstance(planned, BaseException) or self._closed:
            self._finish(jobs, planned if isinstance(planned, BaseException) else self._stopped())
            return
        group, plan = planned
        self._tasks.extend((group, rows) for rows in plan)
        self._stats.jobs += len(jobs)
        self._stats.texts += len(group.out)
        self._stats.queue_seconds += group.waited
        if len(plan) > own and self._idle:
            self._cv.notify_all()  # idle runners can take the other sub-batches

    def _busy_ahead(self) -> bool:
        """Whether older work waits for a slot: queued jobs, queued sub-batches, or a group a
        runner is planning (out of the queue, not yet in the tasks). A caller runs its own rows
        only when none does, so it never overtakes them. Called with the lock held."""
        return bool(self._jobs or self._tasks or self._planning)

    def _give(self, engine: Engine) -> None:
        """A run's slot is free again. Called with the lock held."""
        self._idle.append(engine)
        if self._closed:
            self._cv.notify_all()  # `close` waits for every slot
        elif self._jobs or self._tasks:
            self._cv.notify()  # a runner may be waiting for a slot

    def _loop(self, k: int) -> None:
        while True:
            try:
                if not self._step():
                    return  # closed
            except BaseException:  # a runner never dies; the jobs' errors went to their callers
                log.exception("batcher %s runner %d: unexpected error", self.name, k)

    def _step(self) -> bool:
        """Run one sub-batch; False once the batcher is closed."""
        taken = self._next()
        if taken is None:
            return False
        self._run(*taken)
        return True

    def _run(self, engine: Engine, group: _Group, rows: np.ndarray) -> BaseException | None:
        """Run one sub-batch of `group` on `engine`, whose slot is then given back; the last
        sub-batch of a group hands its jobs their rows (or its error). Returns what this run
        raised, if anything."""
        started = self._clock()
        failed: BaseException | None = None
        if group.error is None:
            try:
                group.out[rows] = engine.run_rows(group.tok, rows)
            except BaseException as exc:  # delivered to every caller of the group
                group.error = failed = exc
        elapsed = self._clock() - started
        cost = sum(text_cost(group.tok.lengths[r]) for r in rows)
        with self._cv:
            self._give(engine)
            self._stats.runs += 1
            self._ew_cost = 0.9 * self._ew_cost + cost
            self._ew_seconds = 0.9 * self._ew_seconds + elapsed
            group.pending -= 1
            if not group.pending:
                self._finish(group.jobs, group.error, group.out)
        return failed
