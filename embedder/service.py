"""The engine's facade: what the HTTP layer calls. Requests (embed, rerank, an RPC batch
admitted as one) checked against the request limits and sent to the models `loading` keeps;
what the service says of itself comes from `health`.

Knows nothing of HTTP. Every failure it raises is a domain error from `embedder.errors`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

from embedder import work
from embedder.backends.runtimes import BackendPolicy, Runtimes
from embedder.batcher import Batcher, Reservation
from embedder.catalog import Catalog, ModelSpec
from embedder.encoder import Embeddings, shorten
from embedder.errors import (
    BrokenModel,
    ClientGone,
    EmbedderError,
    InvalidInput,
    ModelUnavailable,
    NotReady,
    TooLarge,
    UnknownModel,
)
from embedder.health import Board, Health
from embedder.hugepages import weights_on_huge_pages
from embedder.limits import RequestLimits, estimated_cost
from embedder.loading import Loader, Observe, Opener
from embedder.memory import IdleTrim
from embedder.model_state import ModelStatus, mark_broken
from embedder.planning import RunLimits
from embedder.reranker import Doc, Ranking
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore


class Service:
    def __init__(
        self,
        catalog: Catalog,
        store: ModelStore,
        *,
        session_config: SessionConfig | None = None,
        limits: RequestLimits | None = None,
        run_limits: RunLimits | None = None,
        models: Sequence[str] | None = None,
        backends: BackendPolicy | None = None,
        max_queue_wait: float = 10.0,
        idle_trim: float = 1.0,
        board: Board | None = None,
        huge_pages: bool = False,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.limits = limits or RequestLimits()
        # None: ONNX Runtime alone (tools, tests); the server passes EMBEDDER_BACKEND's.
        runtimes = Runtimes(backends, store) if backends is not None else None
        opener = Opener(
            store,
            session_config or SessionConfig(),
            run_limits or RunLimits(),
            max_queue_wait=max_queue_wait,
            runtimes=runtimes,
        )
        self.specs = _served_specs(catalog, models)
        # Every run (and every model's load) is inside `self.activity`; freed memory goes back
        # once idle.
        self.activity = IdleTrim(idle_trim, release=runtimes.release if runtimes else None)
        self.loader = Loader(
            self.specs,
            store,
            opener,
            on_change=self._changed,
            observer=self._batch_observer,
            work=self.activity,
            settle=self._huge_pages if huge_pages else None,
        )
        self.view = Health(catalog, store, self.loader, board)
        # Observers (metrics): runs of the micro-batcher, and work done per request.
        self.on_batch: Callable[[str, int, list[float]], None] | None = None
        self.on_work: Callable[[str, int, int], None] | None = None

    # --- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load every model in the background, so listeners answer `starting` at once."""
        self.activity.start()
        self.loader.start()

    def stop(self) -> None:
        self.loader.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the first load of every model has ended (ready or failed), not the retries."""
        return self.loader.wait(timeout)

    def load_all(self) -> None:
        """Load every model in the caller's thread (tools and tests)."""
        self.loader.load_all()

    def _changed(self) -> None:
        self.view.publish()

    def _huge_pages(self) -> None:
        """The loaded weights onto huge pages; malloc's free pages are given back first."""
        weights_on_huge_pages(trim=self.activity.trim_now)

    def _batch_observer(self, model: str) -> Observe:
        def observe(texts: int, queued: list[float]) -> None:
            if self.on_batch is not None:
                self.on_batch(model, texts, queued)

        return observe

    def _did(self, model: str, texts: int, tokens: int) -> None:
        if self.on_work is not None:
            self.on_work(model, texts, tokens)

    # --- what it says of itself (see `health`) -------------------------------------------

    @property
    def ready(self) -> bool:
        return self.loader.ready

    @property
    def status_by_id(self) -> dict[str, ModelStatus]:
        return self.loader.status_by_id

    @property
    def batchers(self) -> dict[str, Batcher]:
        return self.loader.batchers

    def state(self) -> str:
        return self.view.state()

    def health(self) -> dict[str, Any]:
        return self.view.health()

    def models(self) -> list[dict[str, Any]]:
        return self.view.models()

    def model_status(self, spec: ModelSpec) -> dict[str, Any]:
        return self.view.model(spec)

    def status(self) -> dict[str, Any]:
        return self.view.status()

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
        if st.state == "error" and st.broken:
            raise BrokenModel(
                st.error or f"model {spec.id} is broken", param="model", model=spec.id
            )
        if st.state == "error":
            why = f"{st.error}: {st.cause}" if st.cause else st.error
            after = st.retry_after()
            again = f"; the download is retried in {after} s" if after else ""
            raise ModelUnavailable(
                f"model {spec.id} failed to load: {why}{again}", param="model", retry_after=after
            )
        if st.state != "ready":
            raise NotReady(f"model {spec.id} is {st.state}; retry shortly", param="model")

    def _broke(self, spec: ModelSpec, exc: BrokenModel) -> None:
        """A run of `spec` computed NaN or Inf: the model that did is marked failed, with the
        models that run on it (a cosine scorer): said once in the log, at once in health and
        status. (Called from an `except` around the run: a generator-based context manager
        there cost every request its machinery.)"""
        broken = exc.details.get("model", spec.id)
        ids = [broken, spec.id, *(s.id for s in self.specs if s.embedder == broken)]
        marked = [mark_broken(self.status_by_id, i, exc) for i in dict.fromkeys(ids)]
        if any(marked):
            self._changed()

    def validate_texts(self, texts: object, param: str = "input") -> list[str]:
        return self.limits.texts(texts, param)

    def dimensions(self, spec: ModelSpec, value: object) -> int | None:
        """A request's `dimensions`: None (the model's own), or 1 to the model's."""
        if value is None:
            return None
        native = spec.dims or 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput("dimensions must be an integer", param="dimensions")
        if not 1 <= value <= native:
            raise InvalidInput(
                f"dimensions must be between 1 and the model's {native}", param="dimensions"
            )
        return value

    def embed(
        self,
        texts: object,
        spec: ModelSpec,
        *,
        query: bool = False,
        dimensions: object = None,
    ) -> Embeddings:
        """Unit vectors for `texts` from `spec` (see `resolve`); `query` adds the model's
        retrieval instruction; `dimensions` keeps the first components, unit length again."""
        clean = self.validate_texts(texts)
        dims = self.dimensions(spec, dimensions)
        self._served(spec)
        request = _still_wanted()
        embedding = self.loader.embeddings[spec.id]
        with self._queue_space(spec, clean, query, request) as held, self.activity:
            try:
                out = embedding.embed(clean, query=query, cancelled=request.gone, reserved=held)
            except BrokenModel as exc:
                self._broke(spec, exc)
                raise
        self._did(spec.id, len(clean), out.total_tokens)
        if dims is not None:
            out = replace(out, vectors=shorten(out.vectors, dims))
        return out

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
        request = _still_wanted()
        with self._rerank_space(spec, query, docs, request) as held, self.activity:
            try:
                ranking = self.loader.rerankers[spec.id].rerank(
                    query, docs, top_k=top_k, raw=raw, cancelled=request.gone, reserved=held
                )
            except BrokenModel as exc:
                self._broke(spec, exc)
                raise
        self._did(spec.id, len(docs), ranking.tokens)
        return spec, ranking

    def _queue_space(
        self, spec: ModelSpec, texts: list[str], query: bool, request: work.Request
    ) -> AbstractContextManager[Reservation | None]:
        """Queue space for `texts` on `spec`'s micro-batcher, held from before they are
        tokenised (`_space`), on their estimated cost (Overloaded at once if the queue cannot
        take them, so a burst of large requests is shed without tokenising them). None for a
        model run inline."""
        prefix = len(spec.query_instruction or "") if query else 0
        cost = estimated_cost(texts, spec.max_tokens, prefix)
        return self._space(spec.id, len(texts), cost, request)

    def _rerank_space(
        self, spec: ModelSpec, query: str, docs: Sequence[Doc], request: work.Request
    ) -> AbstractContextManager[Reservation | None]:
        """Queue space for a rerank, held from before it is tokenised (`_space`), on the
        estimate embed requests are admitted on (`_rerank_work`)."""
        runs_on, texts, cost = self._rerank_work(spec, query, docs)
        return self._space(runs_on, texts, cost, request)

    def _rerank_work(
        self, spec: ModelSpec, query: str, docs: Sequence[Doc]
    ) -> tuple[str, int, float]:
        """The model whose micro-batcher runs a rerank by `spec`, and the texts and estimated
        cost it queues there: a cross-encoder's pairs (query and document characters each, up
        to its window) on its own, a cosine scorer's query and documents on its embedding
        model's."""
        if spec.scorer == "cosine" and spec.embedder:
            runs_on = self.catalog.get(spec.embedder)
            texts, prefix = [query, *(d.text for d in docs)], 0
        else:
            runs_on, texts, prefix = spec, [d.text for d in docs], len(query)
        return runs_on.id, len(texts), estimated_cost(texts, runs_on.max_tokens, prefix)

    def _space(
        self, model: str, texts: int, cost: float, request: work.Request
    ) -> AbstractContextManager[Reservation | None]:
        """`texts` of `cost` on `model`'s micro-batcher: their part of what the request's RPC
        batch reserved there for its calls (`batch`), or else reserved now, where what the
        batch still holds does not make the model busy for it (an idle model takes any
        request). None for a model run inline."""
        batcher = self.batchers.get(model)
        if batcher is None:
            return nullcontext()
        whole = request.reserved.get(model)
        if whole is not None and whole.texts >= texts:
            return whole.take(texts, cost)
        return batcher.reserve(texts, cost, mine=whole.texts if whole else 0)

    @contextmanager
    def batch(
        self,
        texts: Mapping[str, Sequence[object]],
        docs: int = 0,
        reranks: Sequence[tuple[str | None, object, Sequence[Doc]]] = (),
    ) -> Iterator[None]:
        """The calls of one RPC batch, admitted as one request: `texts` per embedding model id
        and `docs` to rerank in all are held to one request's limits, and queue space for the
        embed calls' texts and the rerank calls' (`reranks`: reranker name or None, query,
        documents) is reserved up front on every model that runs them (overload on any refuses
        the batch as a whole, before any work); each call takes its part (`_space`). Each
        reservation is given back when the batch ends or, if a later model refuses, at once."""
        total = sum(len(t) for t in texts.values())
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
        count: defaultdict[str, int] = defaultdict(int)  # texts per model that runs them
        cost: defaultdict[str, float] = defaultdict(float)
        for model, given in texts.items():
            count[model] += len(given)
            cost[model] += estimated_cost(given, self.catalog.get(model).max_tokens)
        for name, query, given in reranks:
            if (runs := self._rerank_need(name, query, given)) is not None:
                count[runs[0]] += runs[1]
                cost[runs[0]] += runs[2]
        request = work.current()
        with ExitStack() as held:
            for model, n in count.items():
                batcher = self.batchers.get(model)
                if batcher is None or not n:
                    continue
                request.reserved[model] = held.enter_context(
                    batcher.reserve(n, cost[model], whole=True)
                )
                held.callback(request.reserved.pop, model, None)
            with work.serving(request):  # current from here on, also outside any HTTP request
                yield

    def _rerank_need(
        self, model: str | None, query: object, docs: Sequence[Doc]
    ) -> tuple[str, int, float] | None:
        """What a rerank call of a batch will queue (`_rerank_work`), or None for one that
        will fail on its own before it queues anything."""
        try:
            spec = self.catalog.get(model) if model else self.catalog.default_reranker()
        except EmbedderError:
            return None
        if spec.kind != "rerank" or not isinstance(query, str) or not docs:
            return None
        return self._rerank_work(spec, query, docs)


def _served_specs(catalog: Catalog, models: Sequence[str] | None) -> list[ModelSpec]:
    """The models to serve, in load order: a cosine scorer runs on an embedding model, which
    must then be served too, first."""
    wanted = [catalog.get(m) for m in models] if models else list(catalog)
    specs: list[ModelSpec] = []
    for spec in wanted:
        if spec.embedder and catalog.get(spec.embedder) not in specs:
            specs.append(catalog.get(spec.embedder))
        if spec not in specs:
            specs.append(spec)
    return specs


def _still_wanted() -> work.Request:
    """The current request, once it is sure its client is still there to read the answer."""
    request = work.current()
    if request.client_gone():
        raise ClientGone("the client closed its connection before its work started")
    return request
