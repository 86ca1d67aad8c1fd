"""From a catalog entry whose files are present to the objects that serve it: sessions sized by
the worker's configuration, tokenizers, and the micro-batcher with a runner per core of the
worker, all runners of a model sharing one single-thread session."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from embedder.batcher import Batcher, Engine
from embedder.catalog import ModelSpec
from embedder.encoder import BatchLimits, Embedder
from embedder.errors import ModelUnavailable
from embedder.prepare.external import external_copy
from embedder.reranker import (
    CosineReranker,
    CrossEncoderReranker,
    PairScorer,
    Reranker,
    TextEmbedder,
)
from embedder.sessions import SessionConfig, open_session
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer


@dataclass(frozen=True)
class Opener:
    store: ModelStore
    session_config: SessionConfig
    batch_limits: BatchLimits
    micro_batching: bool = True
    max_queue_wait: float = 10.0
    shared_session: bool = True  # the runners of a model share one session (see `embedding`)

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

    def embedder(self, spec: ModelSpec, config: SessionConfig) -> Embedder:
        assert spec.onnx and spec.tokenizer
        session = open_session(self.graph(spec, spec.onnx, config), config)
        tok = load_tokenizer(self.store.path(spec, spec.tokenizer), spec.max_tokens)
        return Embedder(spec, session, tok, self.batch_limits)

    def embedding(
        self, spec: ModelSpec, observe: Callable[[int, list[float]], None] | None = None
    ) -> tuple[Embedder, Batcher | None]:
        """The model's embedder and, with micro-batching, the batcher in front of its runners.

        The runners share ONE single-thread session (ORT's `run` is thread-safe), so a worker
        holds one copy of the model whatever its core count; `shared_session=False`
        (EMBEDDER_SHARED_SESSIONS=0) gives each runner its own, the layout before."""
        if not self.micro_batching:
            return self.embedder(spec, self.session_config), None
        one = replace(self.session_config, threads=1)
        first = self.embedder(spec, one)
        engines = [first] * self.runners
        if not self.shared_session:
            engines = [first, *(self.embedder(spec, one) for _ in range(self.runners - 1))]
        return first, self._batcher(spec, engines, observe)

    def _batcher(
        self,
        spec: ModelSpec,
        engines: Sequence[Engine],
        observe: Callable[[int, list[float]], None] | None,
    ) -> Batcher:
        return Batcher(
            engines,
            name=spec.id,
            max_texts=max(self.batch_limits.max_batch * 2, 64),
            max_wait=self.max_queue_wait,
            max_request_wait=self.max_request_wait,
            observe=observe,
        )

    def reranker(
        self,
        spec: ModelSpec,
        embeds_with: TextEmbedder | None,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> Reranker:
        """A cosine scorer embeds with `embeds_with` (its embedding model's batcher, if it has
        one: rerank and embed requests then share its runners, runs and overload bound). A
        cross-encoder gets its own pool like an embedding model: one single-thread session
        shared by a runner per core, behind a micro-batcher."""
        if spec.scorer == "cosine":
            if embeds_with is None:
                raise ModelUnavailable(f"{spec.id} needs {spec.embedder}, which did not load")
            return CosineReranker(spec, embeds_with)
        assert spec.onnx and spec.tokenizer
        config = self.session_config
        if self.micro_batching:
            config = replace(config, threads=1)
        session = open_session(self.graph(spec, spec.onnx, config), config)
        tok_path = self.store.path(spec, spec.tokenizer)
        scorer = PairScorer(
            spec,
            session,
            load_tokenizer(tok_path, spec.max_tokens),
            load_tokenizer(tok_path, spec.max_tokens),
            self.batch_limits,
        )
        if not self.micro_batching:
            return CrossEncoderReranker(scorer)
        return CrossEncoderReranker(scorer, self._batcher(spec, [scorer] * self.runners, observe))
