"""From catalog entries to the objects that serve them. `Opener`: one model whose files are
present -> its session, tokenizers, and its runner (a micro-batcher with a runner per core of
the worker). `Loader`: every model of the service, in the background, with download retries
and a state per model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from embedder import threadnames
from embedder.backends.calibration import Probe, embedding_probe, pair_probe
from embedder.backends.choice import Runtime
from embedder.backends.runtimes import Runtimes
from embedder.batcher import Batcher, Engine
from embedder.catalog import ModelSpec
from embedder.encoder import Embedding, TextEncoder
from embedder.errors import DownloadError, EmbedderError, ModelUnavailable
from embedder.model_state import FailureLog, ModelStatus
from embedder.planning import RunLimits
from embedder.prepare.external import external_copy
from embedder.reranker import CosineReranker, CrossEncoderReranker, PairScorer, Reranker
from embedder.sessions import SessionConfig, check_ort_version, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer

log = logging.getLogger("embedder.loading")


@dataclass(frozen=True)
class Opener:
    store: ModelStore
    session_config: SessionConfig
    run_limits: RunLimits
    max_queue_wait: float = 10.0
    runtimes: Runtimes | None = None  # which runtime serves each model; None: ONNX Runtime

    @property
    def max_request_wait(self) -> float:
        """How long a caller waits for an admitted request at most: admission promises about
        `max_queue_wait`, so several times that means a stuck run, not a busy one."""
        return max(60.0, 6.0 * self.max_queue_wait)

    @property
    def runners(self) -> int:
        """Micro-batch runners per model: one per core of this worker."""
        return max(1, self.session_config.threads)

    def graph(self, spec: ModelSpec, name: str, config: SessionConfig) -> Path:
        """The graph file a session opens: with shared weights, its external-data copy (kept in
        the model's directory under the models root)."""
        path = self.store.path(spec, name)
        if config.shared_weights:
            path = external_copy(path, self.store.root / spec.id)
        return path

    def _session(self, spec: ModelSpec, config: SessionConfig, probe: Probe) -> Any:
        """A session on the model's graph, on the runtime `runtimes` chooses for the model
        (at its first session, timed and checked on `probe`), else ONNX Runtime."""
        assert spec.onnx
        graph = self.graph(spec, spec.onnx, config)
        if self.runtimes is None:
            return open_session(graph, config)
        return self.runtimes.open(spec, graph, config, probe)

    def runtime(self, spec: ModelSpec) -> Runtime:
        """What computes `spec` (a cosine scorer: its embedding model's runtime)."""
        model = spec.embedder if spec.scorer == "cosine" and spec.embedder else spec.id
        chosen = self.runtimes.runtime(model) if self.runtimes else None
        return chosen or Runtime("onnxruntime", self.store.catalog.get(model).precision)

    def encoder(self, spec: ModelSpec) -> TextEncoder:
        """The model's encoder as its runners share it: one single-thread session (OpenVINO
        plans a stream for each runner), on the runtime chosen for the model."""
        assert spec.onnx and spec.tokenizer
        one = replace(self.session_config, threads=1, streams=self.runners)
        tok = load_tokenizer(self.store.path(spec, spec.tokenizer), spec.max_tokens)
        session = self._session(spec, one, embedding_probe(spec, tok, self.run_limits))
        return TextEncoder(spec, session, tok, self.run_limits)

    def embedding(
        self, spec: ModelSpec, observe: Callable[[int, list[float]], None] | None = None
    ) -> Embedding:
        """The model's encoder behind a batcher in front of a runner per core. The runners
        share ONE single-thread session (ORT's `run` is thread-safe; OpenVINO plans a stream
        for each), so a worker holds one copy of the model whatever its core count
        (docs/memory.md)."""
        encoder = self.encoder(spec)
        return Embedding(encoder, self._batcher(spec, [encoder] * self.runners, observe))

    def _batcher(
        self,
        spec: ModelSpec,
        engines: Sequence[Engine],
        observe: Callable[[int, list[float]], None] | None,
    ) -> Batcher:
        return Batcher(
            engines,
            name=spec.id,
            max_texts=max(self.run_limits.max_batch * 2, 64),
            max_wait=self.max_queue_wait,
            max_request_wait=self.max_request_wait,
            observe=observe,
        )

    def reranker(
        self,
        spec: ModelSpec,
        embeds_with: Embedding | None,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> Reranker:
        """A cosine scorer embeds with `embeds_with`, its embedding model as served (rerank and
        embed requests then share its runners, runs and overload bound). A
        cross-encoder gets its own pool like an embedding model: one single-thread session
        shared by a runner per core, behind a micro-batcher."""
        if spec.scorer == "cosine":
            if embeds_with is None:
                raise ModelUnavailable(f"{spec.id} needs {spec.embedder}, which did not load")
            return CosineReranker(spec, embeds_with)
        assert spec.onnx and spec.tokenizer
        config = replace(self.session_config, threads=1, streams=self.runners)
        tok_path = self.store.path(spec, spec.tokenizer)
        toks = [load_tokenizer(tok_path, spec.max_tokens) for _ in range(2)]  # see PairScorer
        session = self._session(spec, config, pair_probe(spec, toks[0], toks[1], self.run_limits))
        scorer = PairScorer(spec, session, toks[0], toks[1], self.run_limits)
        return CrossEncoderReranker(scorer, self._batcher(spec, [scorer] * self.runners, observe))


Observe = Callable[[int, list[float]], None]


class Loader:
    """Every model of the service from files to served objects, in a background thread (so the
    listeners answer `starting` at once), and failed downloads retried with backoff (30 s
    doubling to 15 min) for as long as the worker lives: a Hub that was unreachable may come
    back. Each model's state is kept in `status_by_id` (replaced whole on each change, see
    `model_state`; this thread is its only writer); `on_change` hears of every change.

    The thread never ends while a retry is promised: whatever a load or a listener raises that
    the loading does not expect is logged, and a model it left half-way is marked failed with
    the reason, so `/health` never shows a `retry_in` that no thread will keep."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        store: ModelStore,
        opener: Opener,
        *,
        on_change: Callable[[], None] = lambda: None,
        observer: Callable[[str], Observe | None] = lambda model: None,
        work: AbstractContextManager[Any] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        # What runs once a round of loads has ended with a model loaded (the weights' huge
        # pages): after `settled`, so it never delays the first answers.
        self.settle = settle
        # Loading runs inside `work` (the worker's idle trim): the graph's parse buffers, freed
        # but kept by malloc, go back once it is idle.
        self.work = work if work is not None else nullcontext()
        self.store = store
        self.opener = opener
        self.on_change = on_change
        self.observer = observer
        self.status_by_id: dict[str, ModelStatus] = {s.id: ModelStatus() for s in self.specs}
        self.embeddings: dict[str, Embedding] = {}
        self.batchers: dict[str, Batcher] = {}  # the micro-batched models' (their stats)
        self.rerankers: dict[str, Reranker] = {}
        self.retry_first = 30.0
        self.failure_log = FailureLog()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return all(s.state == "ready" for s in self.status_by_id.values())

    @property
    def settled(self) -> bool:
        """The first load of every model has ended (ready or failed)."""
        return self._loaded.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ends download retries and stops the models' runner threads (each `Batcher.close`
        waits at most `timeout` for a run in progress); False when some runner had not ended
        by then. A model still loading closes its own batcher once it sees the stop."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        ended = True
        for batcher in list(self.batchers.values()):
            ended &= batcher.close(max(0.0, deadline - time.monotonic()))
        return ended

    def wait(self, timeout: float | None = None) -> bool:
        """Until the first load of every model has ended (ready or failed), not the retries."""
        if self._thread is not None:
            self._loaded.wait(timeout)
        return self.ready

    def load_all(self) -> None:
        self.failure_log.new_round()
        self._changed()
        try:
            check_ort_version()
        except EmbedderError as exc:
            for spec in self.specs:
                self._set(spec.id, state="error", error=exc.message)
            self._changed()
            return
        for spec in self.specs:
            self._attempt(spec)

    def _run(self) -> None:
        try:
            self.load_all()
        except Exception as exc:  # a bug: say so, and let wait() return rather than hang
            log.exception("loading models failed")
            self._abandon(exc, "loading stopped")
        finally:
            threadnames.name_all()  # the runners just started, named for per-thread CPU
            self._loaded.set()
        self._settle()
        try:
            self._retry_downloads()
        except Exception as exc:
            log.exception("retrying failed downloads stopped")
            self._abandon(exc, "download retries stopped")

    def _retry_downloads(self) -> None:
        delay = self.retry_first
        while not self._stop.is_set():
            pending = [s for s in self.specs if self.status_by_id[s.id].retry]
            if not pending:
                return
            log.warning("retrying %d failed downloads in %.0f s", len(pending), delay)
            for spec in pending:
                self._set(spec.id, retry_at=time.time() + delay)
            self._changed()
            if self._stop.wait(delay):
                return
            self.failure_log.new_round()
            for spec in pending:
                self._attempt(spec)
            self._settle()
            delay = min(delay * 2, 900.0)

    def _attempt(self, spec: ModelSpec) -> None:
        """One load of `spec`, then `on_change`. What escapes `_load` is a bug (in a listener,
        the idle trim, the failure log): it is logged, and a model it left half-way is marked
        failed with the reason; a download retry it had scheduled stays scheduled."""
        try:
            with self.work:
                self._load(spec)
        except Exception as exc:
            log.exception("loading model %s failed unexpectedly", spec.id)
            if self.status_by_id[spec.id].state not in ("ready", "error"):
                self._set(spec.id, state="error", error=_bug(exc), cause=None)
        self._changed()

    def _settle(self) -> None:
        """Run `settle` if some model is loaded (and the service is not stopping); what it
        raises is logged, loading goes on."""
        if self.settle is None or self._stop.is_set() or not (self.embeddings or self.rerankers):
            return
        try:
            self.settle()
        except Exception:
            log.exception("settling the loaded models failed")

    def _abandon(self, exc: Exception, what: str) -> None:
        """The loader thread is ending on a bug: no model may still look as if it were loading
        or about to be retried. Each such one is marked failed, the reason in its error."""
        for spec in self.specs:
            st = self.status_by_id[spec.id]
            if st.state == "ready" or (st.state == "error" and not st.retry):
                continue
            error = f"{st.error}; {what}: {_bug(exc)}" if st.error else f"{what}: {_bug(exc)}"
            self._set(spec.id, state="error", error=error, retry=False, retry_at=None)
        self._changed()

    def _changed(self) -> None:
        """Tell `on_change`; a listener that fails is logged, and loading goes on."""
        try:
            self.on_change()
        except Exception:
            log.exception("a listener of model states failed")

    def _set(self, model: str, **changes: Any) -> None:
        self.status_by_id[model] = replace(self.status_by_id[model], **changes)

    def _load(self, spec: ModelSpec) -> None:
        started = time.time()
        self._set(spec.id, state="downloading", started=started, retry=False, retry_at=None)
        try:
            self._changed()
            self.store.ensure(spec)
            self._set(spec.id, state="loading")
            observe = self.observer(spec.id)
            if spec.kind == "embedding":
                embedding = self.opener.embedding(spec, observe)
                if isinstance(embedding.runner, Batcher):
                    self._keep(spec.id, embedding.runner)
                self.embeddings[spec.id] = embedding
            else:
                embeds_with = self.embeddings.get(spec.embedder or "")
                reranker = self.opener.reranker(spec, embeds_with, observe)
                if isinstance(reranker, CrossEncoderReranker) and isinstance(
                    reranker.runner, Batcher
                ):
                    self._keep(spec.id, reranker.runner)
                self.rerankers[spec.id] = reranker
            seconds = round(time.time() - started, 3)
            # an earlier failure is over
            self._set(
                spec.id,
                state="ready",
                error=None,
                cause=None,
                load_seconds=seconds,
                runtime=self.opener.runtime(spec),
            )
            log.info("model %s ready in %.1fs", spec.id, seconds)
        except EmbedderError as exc:
            st = self.status_by_id[spec.id].failed(exc, retry=isinstance(exc, DownloadError))
            self.status_by_id[spec.id] = st
            self.failure_log.log(spec.id, st)
        except Exception as exc:  # a bug or an unexpected file: report it, keep the others
            self._set(spec.id, state="error", error=_bug(exc), cause=None)
            log.exception("model %s failed", spec.id)

    def _keep(self, model: str, batcher: Batcher) -> None:
        """Register a model's batcher; one made after `stop` is closed at once (stop may have
        gone over the registered ones before this one was there)."""
        self.batchers[model] = batcher
        if self._stop.is_set():
            batcher.close()


def _bug(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
