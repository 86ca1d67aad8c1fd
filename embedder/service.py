"""The engine's facade: loads the catalog's models in the background and serves requests.

Knows nothing of HTTP. Every failure it raises is a domain error from `embedder.errors`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from embedder import work
from embedder.batcher import Batcher
from embedder.catalog import Catalog, ModelSpec
from embedder.encoder import BatchLimits, Embedder, Embeddings
from embedder.errors import (
    ClientGone,
    DownloadError,
    EmbedderError,
    InvalidInput,
    ModelUnavailable,
    NotReady,
    TooLarge,
    UnknownModel,
)
from embedder.limits import Limits
from embedder.loading import Opener
from embedder.memory import IdleTrim
from embedder.model_state import (
    ORDER,
    FailureLog,
    ModelStatus,
    error_text,
    keyed_causes,
    report,
)
from embedder.reranker import CrossEncoderReranker, Doc, Ranking, Reranker
from embedder.server.workers import WorkerBoard, combine
from embedder.sessions import SessionConfig, check_ort_version
from embedder.store.files import ModelStore

log = logging.getLogger("embedder.service")


class Service:
    def __init__(
        self,
        catalog: Catalog,
        store: ModelStore,
        *,
        session_config: SessionConfig | None = None,
        limits: Limits | None = None,
        batch_limits: BatchLimits | None = None,
        models: Sequence[str] | None = None,
        micro_batching: bool = True,
        shared_sessions: bool = True,
        max_queue_wait: float = 10.0,
        idle_trim: float = 1.0,
        board: WorkerBoard | None = None,
    ) -> None:
        self.catalog = catalog
        self.board = board
        self.joining = False  # set for a worker that loads before it accepts (reload, respawn)
        self.store = store
        self.opener = Opener(
            store,
            session_config or SessionConfig(),
            batch_limits or BatchLimits(),
            micro_batching=micro_batching,
            max_queue_wait=max_queue_wait,
            shared_session=shared_sessions,
        )
        self.limits = limits or Limits()
        wanted = [catalog.get(m) for m in models] if models else list(catalog)
        # A cosine scorer runs on an embedding model, which must then be served too (first).
        self.specs: list[ModelSpec] = []
        for spec in wanted:
            if spec.embedder and catalog.get(spec.embedder) not in self.specs:
                self.specs.append(catalog.get(spec.embedder))
            if spec not in self.specs:
                self.specs.append(spec)
        self.status_by_id: dict[str, ModelStatus] = {s.id: ModelStatus() for s in self.specs}
        self.embedders: dict[str, Embedder] = {}
        self.batchers: dict[str, Batcher] = {}
        self.rerankers: dict[str, Reranker] = {}
        self.started_at = time.time()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self.retry_first = 30.0
        self.failure_log = FailureLog()
        # Observers (metrics): runs of the micro-batcher, and work done per request.
        self.on_batch: Callable[[str, int, list[float]], None] | None = None
        self.on_work: Callable[[str, int, int], None] | None = None
        # Every run is inside `self.activity`; freed batch memory goes back once idle.
        self.activity = IdleTrim(idle_trim)

    # --- loading ------------------------------------------------------------------------

    def start(self) -> None:
        """Load every model in a background thread, so listeners answer `starting` at once."""
        self.activity.start()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._load_and_retry, name="model-loader", daemon=True
            )
            self._thread.start()

    @property
    def _stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ends download retries (the loader thread is a daemon; this is for tests)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the first load of every model has ended (ready or failed), not the retries."""
        if self._thread is not None:
            self._loaded.wait(timeout)
        return self.ready

    def load_all(self) -> None:
        self.failure_log.new_round()
        self._publish()
        try:
            check_ort_version()
        except EmbedderError as exc:
            for st in self.status_by_id.values():
                st.state, st.error = "error", exc.message
            self._publish()
            return
        for spec in self.specs:
            # Loading is work too: the graph's parse buffers (~0.2-0.4 GiB freed but kept by
            # malloc for the BGE-sized set) go back to the system once the worker is idle.
            with self.activity:
                self._load(spec)
            self._publish()

    def _load_and_retry(self) -> None:
        try:
            self.load_all()
        finally:
            self._loaded.set()
        self._retry_downloads()

    def _retry_downloads(self) -> None:
        """A Hub that was unreachable may come back: retry failed downloads with backoff
        (30 s doubling to 15 min), for as long as the worker lives."""
        delay = self.retry_first
        while True:
            pending = [
                s for s in self.specs if self.status_by_id[s.id].retry and not self._stopping
            ]
            if not pending:
                return
            log.warning("retrying %d failed downloads in %.0f s", len(pending), delay)
            for spec in pending:
                self.status_by_id[spec.id].retry_at = time.time() + delay
            self._publish()
            if self._stop.wait(delay):
                return
            self.failure_log.new_round()
            for spec in pending:
                self._load(spec)
                self._publish()
            delay = min(delay * 2, 900.0)

    def _publish(self) -> None:
        if self.board is not None:
            try:
                health = self.local_health()
                if self.joining and health["status"] == "starting":
                    return  # not accepting yet: the siblings answer for the service
                self.board.publish(health)
                if health["status"] in ("ok", "degraded"):
                    self.board.mark_served()
            except OSError as exc:
                log.warning("cannot publish worker state: %s", exc)

    def _load(self, spec: ModelSpec) -> None:
        st = self.status_by_id[spec.id]
        st.started = time.time()
        try:
            st.state, st.retry, st.retry_at = "downloading", False, None
            self._publish()
            self.store.ensure(spec)
            st.state = "loading"
            if spec.kind == "embedding":
                embedder, batcher = self.opener.embedding(spec, self._batch_observer(spec.id))
                if batcher is not None:
                    self.batchers[spec.id] = batcher
                self.embedders[spec.id] = embedder
            else:
                by = spec.embedder or ""
                embeds_with = self.batchers.get(by) or self.embedders.get(by)
                reranker = self.opener.reranker(spec, embeds_with, self._batch_observer(spec.id))
                if isinstance(reranker, CrossEncoderReranker) and isinstance(
                    reranker.runner, Batcher
                ):
                    self.batchers[spec.id] = reranker.runner  # its stats in status
                self.rerankers[spec.id] = reranker
            st.load_seconds = round(time.time() - st.started, 3)
            st.state, st.error, st.cause = "ready", None, None  # an earlier failure is over
            log.info("model %s ready in %.1fs", spec.id, st.load_seconds)
        except EmbedderError as exc:
            st.failed(exc, retry=isinstance(exc, DownloadError))
            self.failure_log.log(spec.id, st)
        except Exception as exc:  # a bug or an unexpected file: report it, keep the others
            st.state, st.error, st.cause = "error", f"{type(exc).__name__}: {exc}", None
            log.exception("model %s failed", spec.id)

    def _batch_observer(self, model: str) -> Callable[[int, list[float]], None]:
        def observe(texts: int, queued: list[float]) -> None:
            if self.on_batch is not None:
                self.on_batch(model, texts, queued)

        return observe

    def _did(self, model: str, texts: int, tokens: int) -> None:
        if self.on_work is not None:
            self.on_work(model, texts, tokens)

    # --- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return all(s.state == "ready" for s in self.status_by_id.values())

    def state(self) -> str:
        """starting | ok | degraded (some models failed, others serve) | error (none serve)."""
        states = [s.state for s in self.status_by_id.values()]
        if any(s in ("pending", "downloading", "loading") for s in states):
            return "starting"
        if all(s == "ready" for s in states):
            return "ok"
        return "degraded" if "ready" in states else "error"

    def local_health(self) -> dict[str, Any]:
        """This process's view: its own models."""
        ready = [i for i, s in self.status_by_id.items() if s.state == "ready"]
        status = self.state()
        out: dict[str, Any] = {
            "status": status,
            "models_ready": status == "ok",
            "models_loaded": ready,
            "models": {i: s.state for i, s in self.status_by_id.items()},
        }
        return {**out, **report(self.status_by_id)}

    def _worker_states(self) -> dict[int, dict[str, Any]]:
        """Every live worker's published view, this one's fresh."""
        workers = self.board.read() if self.board is not None else {}
        workers[os.getpid()] = {"pid": os.getpid(), **self.local_health()}
        return workers

    def health(self) -> dict[str, Any]:
        """The service's view: every live worker's, so any worker answers the same."""
        if self.board is None:
            mine = self.local_health()
            del mine["models"]
            return mine
        workers = self._worker_states()
        mine = workers[os.getpid()]
        ready = set(mine["models_loaded"])
        errors: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for w in workers.values():
            ready &= set(w.get("models_loaded", []))
            errors.update(w.get("errors", {}))
            failures.update(w.get("failures", {}))
        status = combine([w["status"] for w in workers.values()])
        out: dict[str, Any] = {
            "status": status,
            "models_ready": status == "ok",
            "models_loaded": [m for m in mine["models_loaded"] if m in ready],
            "workers": {str(pid): w["status"] for pid, w in sorted(workers.items())},
        }
        if errors:
            out["errors"] = errors
        if failures:
            out["failures"] = failures
        if "retry_in" in mine:
            out["retry_in"] = mine["retry_in"]
        return out

    def model_status(
        self, spec: ModelSpec, workers: dict[int, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """One model; its state is the least advanced over the workers (ready only when every
        worker can serve it)."""
        st = self.status_by_id.get(spec.id, ModelStatus())
        state: str = st.state
        for w in (workers or {}).values():
            other = w.get("models", {}).get(spec.id, state)
            if ORDER.get(other, 0) < ORDER.get(state, 0):
                state = other
        return {
            **spec.describe(),
            "state": state,
            "ready": state == "ready",
            "error": error_text(st, keyed_causes(self.status_by_id.values())),
            "load_seconds": st.load_seconds,
            "disk_bytes": self.store.disk_size(spec),
            "batching": asdict(b.stats) if (b := self.batchers.get(spec.id)) else None,
        }

    def models(self) -> list[dict[str, Any]]:
        workers = self._worker_states() if self.board is not None else None
        return [self.model_status(s, workers) for s in self.specs]

    def status(self) -> dict[str, Any]:
        return {
            **self.health(),
            "catalog": self.catalog.name,
            "models_root": str(self.store.root),
            "uptime_s": round(time.time() - self.started_at, 1),
            "models": self.models(),
            "downloads": {s.id: self.store.progress(s) for s in self.specs},
            "aliases": dict(self.catalog.aliases),
        }

    # --- requests -----------------------------------------------------------------------

    def resolve(self, model: str | None = None, quality: object = None) -> ModelSpec:
        """The embedding model for a request: by id/alias, by quality level, else the default.
        Both `model` and `quality` may be given only when they name the same model."""
        if quality is not None:
            if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 4:
                raise InvalidInput(
                    f"quality must be an integer 1-4, got {quality!r}", param="quality"
                )
            spec = self.catalog.level(quality)
            if model is not None and self.catalog.get(model).id != spec.id:
                raise InvalidInput(
                    f"quality {quality} is {spec.id} but model is {model!r}: send one of them",
                    param="quality",
                )
        elif model is not None:
            spec = self.catalog.get(model)
        else:
            spec = self.catalog.default_embedding()
        if spec.kind != "embedding":
            raise InvalidInput(f"{spec.id} is a reranker, not an embedding model", param="model")
        return spec

    def _served(self, spec: ModelSpec) -> None:
        st = self.status_by_id.get(spec.id)
        if st is None:
            raise UnknownModel(f"model {spec.id!r} is not loaded by this instance", param="model")
        if st.state == "error":
            why = f"{st.error}: {st.cause}" if st.cause else st.error
            after = st.retry_after()
            again = f"; the download is retried in {after} s" if after else ""
            raise ModelUnavailable(
                f"model {spec.id} failed to load: {why}{again}", param="model", retry_after=after
            )
        if st.state != "ready":
            raise NotReady(f"model {spec.id} is {st.state}; retry shortly", param="model")

    def validate_texts(self, texts: object, param: str = "input") -> list[str]:
        return self.limits.texts(texts, param)

    def embed(
        self,
        texts: object,
        *,
        model: str | None = None,
        quality: object = None,
        query: bool = False,
    ) -> tuple[ModelSpec, Embeddings]:
        clean = self.validate_texts(texts)
        spec = self.resolve(model, quality)
        self._served(spec)
        request = _still_wanted()
        embedder = self.embedders[spec.id]
        batcher = self.batchers.get(spec.id)
        with self.activity:
            if batcher is None:
                out = embedder.embed(clean, query=query)
            else:
                reserved = request.reserved.get(spec.id, 0) >= len(clean)
                if reserved:
                    request.reserved[spec.id] -= len(clean)
                out = batcher.embed(
                    embedder.instruct(clean) if query else clean,
                    cancelled=request.gone,
                    reserved=reserved,
                )
        self._did(spec.id, len(clean), out.total_tokens)
        return spec, out

    def rerank(
        self,
        query: object,
        docs: Sequence[Doc],
        *,
        model: str | None = None,
        top_k: object = None,
        raw: bool = False,
    ) -> tuple[ModelSpec, Ranking]:
        query, top_k = self.limits.rerank(query, docs, top_k)
        spec = self.catalog.get(model) if model else self.catalog.default_reranker()
        if spec.kind != "rerank":
            raise InvalidInput(f"{spec.id} is an embedding model, not a reranker", param="model")
        self._served(spec)
        _still_wanted()
        with self.activity:
            ranking = self.rerankers[spec.id].rerank(query, docs, top_k=top_k, raw=raw)
        self._did(spec.id, len(docs), ranking.tokens)
        return spec, ranking

    @contextmanager
    def batch(self, texts: Mapping[str, int], docs: int = 0) -> Iterator[None]:
        """The calls of one RPC batch, admitted as one request: `texts` per embedding model id
        and `docs` to rerank in all are held to one request's limits, and queue space for the
        texts is reserved up front (overload refuses the batch as a whole, before any work)."""
        total = sum(texts.values())
        if total > self.limits.max_inputs:
            raise TooLarge(
                f"the batch has {total} texts in all; the limit is {self.limits.max_inputs}",
                param="texts",
            )
        if docs > self.limits.max_docs:
            raise TooLarge(
                f"the batch has {docs} documents in all; the limit is {self.limits.max_docs}",
                param="docs",
            )
        request = work.current()
        held: dict[str, int] = {}
        try:
            for model, n in texts.items():
                batcher = self.batchers.get(model)
                if batcher is not None and n:
                    batcher.reserve(n)
                    held[model] = n
            request.reserved.update(held)
            with work.serving(request):  # current from here on, also outside any HTTP request
                yield
        finally:
            for model in held:
                left = request.reserved.pop(model, 0)
                if left:
                    self.batchers[model].release(left)


def _still_wanted() -> work.Request:
    """The current request, once it is sure its client is still there to read the answer."""
    request = work.current()
    if request.client_gone():
        raise ClientGone("the client closed its connection before its work started")
    return request
