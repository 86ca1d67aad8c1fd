"""From catalog entries to the objects that serve them. `Opener`: one model whose files are
present -> sessions sized by the worker's configuration, tokenizers, and its runner (a
micro-batcher with a runner per core of the worker, or inline). `Loader`: every model of the
service, in the background, with download retries and a state per model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from embedder.backends.calibration import Probe, embedding_probe, pair_probe
from embedder.backends.choice import Runtime
from embedder.backends.runtimes import Runtimes
from embedder.batcher import Batcher, Engine, Inline
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
    micro_batching: bool = True
    max_queue_wait: float = 10.0
    shared_session: bool = True  # the runners of a model share one session (see `embedding`)
    lone_session: bool = False  # and an all-core one for lone texts (see `embedding`)
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

    def _encoder(
        self, spec: ModelSpec, config: SessionConfig, like: TextEncoder | None = None
    ) -> TextEncoder:
        """An encoder on a session of its own; one made `like` another shares its tokenizer
        (only the first tokenizes: the others are runners' engines, which only run rows)."""
        assert spec.onnx and spec.tokenizer
        if like is not None:
            tok = like.tokenizer
        else:
            tok = load_tokenizer(self.store.path(spec, spec.tokenizer), spec.max_tokens)
        session = self._session(spec, config, embedding_probe(spec, tok, self.run_limits))
        return TextEncoder(spec, session, tok, self.run_limits)

    def embedding(
        self, spec: ModelSpec, observe: Callable[[int, list[float]], None] | None = None
    ) -> Embedding:
        """The model's encoder behind its runner: with micro-batching, a batcher in front of a
        runner per core, else `Inline` on one session with the worker's threads.

        The runners share ONE single-thread session when `shared_session` (ORT's `run` is
        thread-safe; the default), so a worker holds one copy of the model whatever its core
        count; otherwise (EMBEDDER_SHARED_SESSIONS=0) each runner has its own.

        With `lone_session` (EMBEDDER_LONE_SESSION=1) a second copy runs with a thread per core
        for a lone text at idle (`Batcher`): 1.5-1.7x faster there, at the price of the model's
        memory once more (RSS after load: bge-base-sized FP32 460 -> 896 MiB). Its threads
        spin during a run only, so they take no core from the runners between runs."""
        if not self.micro_batching:
            encoder = self._encoder(spec, self.session_config)
            return Embedding(encoder, Inline(encoder))
        streams = self.runners if self.shared_session else 1
        one = replace(self.session_config, threads=1, streams=streams)
        first = self._encoder(spec, one)
        engines = [first] * self.runners
        if not self.shared_session:
            engines = [first, *(self._encoder(spec, one, first) for _ in range(self.runners - 1))]
        lone = None
        if self.lone_session and self.runners > 1:
            every = replace(
                self.session_config, threads=self.runners, spinning=True, spin_stop=True
            )
            lone = self._encoder(spec, every, first)
        return Embedding(first, self._batcher(spec, engines, observe, lone))

    def _batcher(
        self,
        spec: ModelSpec,
        engines: Sequence[Engine],
        observe: Callable[[int, list[float]], None] | None,
        lone: Engine | None = None,
    ) -> Batcher:
        return Batcher(
            engines,
            name=spec.id,
            max_texts=max(self.run_limits.max_batch * 2, 64),
            max_wait=self.max_queue_wait,
            max_request_wait=self.max_request_wait,
            observe=observe,
            lone=lone,
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
        config = self.session_config
        if self.micro_batching:
            config = replace(config, threads=1, streams=self.runners)
        tok_path = self.store.path(spec, spec.tokenizer)
        toks = [load_tokenizer(tok_path, spec.max_tokens) for _ in range(2)]  # see PairScorer
        session = self._session(spec, config, pair_probe(spec, toks[0], toks[1], self.run_limits))
        scorer = PairScorer(spec, session, toks[0], toks[1], self.run_limits)
        if not self.micro_batching:
            return CrossEncoderReranker(scorer)
        return CrossEncoderReranker(scorer, self._batcher(spec, [scorer] * self.runners, observe))


Observe = Callable[[int, list[float]], None]


class Loader:
    """Every model of the service from files to served objects, in a background thread (so the
    listeners answer `starting` at once), and failed downloads retried with backoff (30 s
    doubling to 15 min) for as long as the worker lives: a Hub that was unreachable may come
    back. Each model's state is kept in `status_by_id`; `on_change` hears of every change."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        store: ModelStore,
        opener: Opener,
        *,
        on_change: Callable[[], None] = lambda: None,
        observer: Callable[[str], Observe | None] = lambda model: None,
        work: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.specs = list(specs)
        # Loading runs inside `work` (the worker's idle trim): the graph's parse buffers, freed
        # but kept by malloc (~0.2-0.4 GiB on the BGE-sized set), go back once it is idle.
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

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ends download retries (the thread is a daemon; this is for tests and tools)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the first load of every model has ended (ready or failed), not the retries."""
        if self._thread is not None:
            self._loaded.wait(timeout)
        return self.ready

    def load_all(self) -> None:
        self.failure_log.new_round()
        self.on_change()
        try:
            check_ort_version()
        except EmbedderError as exc:
            for st in self.status_by_id.values():
                st.state, st.error = "error", exc.message
            self.on_change()
            return
        for spec in self.specs:
            with self.work:
                self._load(spec)
            self.on_change()

    def _run(self) -> None:
        try:
            self.load_all()
        except Exception:  # a bug: say so, and let wait() return rather than hang
            log.exception("loading models failed")
        finally:
            self._loaded.set()
        self._retry_downloads()

    def _retry_downloads(self) -> None:
        delay = self.retry_first
        while True:
            pending = [
                s for s in self.specs if self.status_by_id[s.id].retry and not self._stop.is_set()
            ]
            if not pending:
                return
            log.warning("retrying %d failed downloads in %.0f s", len(pending), delay)
            for spec in pending:
                self.status_by_id[spec.id].retry_at = time.time() + delay
            self.on_change()
            if self._stop.wait(delay):
                return
            self.failure_log.new_round()
            for spec in pending:
                with self.work:
                    self._load(spec)
                self.on_change()
            delay = min(delay * 2, 900.0)

    def _load(self, spec: ModelSpec) -> None:
        st = self.status_by_id[spec.id]
        st.started = time.time()
        try:
            st.state, st.retry, st.retry_at = "downloading", False, None
            self.on_change()
            self.store.ensure(spec)
            st.state = "loading"
            observe = self.observer(spec.id)
            if spec.kind == "embedding":
                embedding = self.opener.embedding(spec, observe)
                if isinstance(embedding.runner, Batcher):
                    self.batchers[spec.id] = embedding.runner
                self.embeddings[spec.id] = embedding
            else:
                embeds_with = self.embeddings.get(spec.embedder or "")
                reranker = self.opener.reranker(spec, embeds_with, observe)
                if isinstance(reranker, CrossEncoderReranker) and isinstance(
                    reranker.runner, Batcher
                ):
                    self.batchers[spec.id] = reranker.runner
                self.rerankers[spec.id] = reranker
            st.load_seconds = round(time.time() - st.started, 3)
            st.runtime = self.opener.runtime(spec)
            st.state, st.error, st.cause = "ready", None, None  # an earlier failure is over
            log.info("model %s ready in %.1fs", spec.id, st.load_seconds)
        except EmbedderError as exc:
            st.failed(exc, retry=isinstance(exc, DownloadError))
            self.failure_log.log(spec.id, st)
        except Exception as exc:  # a bug or an unexpected file: report it, keep the others
            st.state, st.error, st.cause = "error", f"{type(exc).__name__}: {exc}", None
            log.exception("model %s failed", spec.id)
