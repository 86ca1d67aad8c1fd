"""From a catalog entry whose files are present to the objects that serve it: sessions sized by
the worker's configuration, tokenizers, and for embedding models the micro-batcher with a
runner (a single-thread session) per core of the worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from embedder.batcher import Batcher
from embedder.catalog import ModelSpec
from embedder.encoder import BatchLimits, Embedder
from embedder.errors import ModelUnavailable
from embedder.prepare.external import external_copy
from embedder.reranker import CosineReranker, CrossEncoderReranker, Reranker, TextEmbedder
from embedder.sessions import SessionConfig, open_session
from embedder.store import ModelStore
from embedder.tokens import load_tokenizer


@dataclass(frozen=True)
class Opener:
    store: ModelStore
    session_config: SessionConfig
    batch_limits: BatchLimits
    micro_batching: bool = True
    max_queue_wait: float = 10.0

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
        """The model's embedder and, with micro-batching, the batcher in front of its runners
        (the embedder is then the first runner's, for token counts and direct use)."""
        if not self.micro_batching:
            return self.embedder(spec, self.session_config), None
        one = replace(self.session_config, threads=1)
        engines = [self.embedder(spec, one) for _ in range(self.runners)]
        batcher = Batcher(
            engines,
            name=spec.id,
            max_texts=max(self.batch_limits.max_batch * 2, 64),
            max_wait=self.max_queue_wait,
            observe=observe,
        )
        return engines[0], batcher

    def reranker(self, spec: ModelSpec, embeds_with: TextEmbedder | None) -> Reranker:
        """A cosine scorer embeds with `embeds_with` (its embedding model's batcher, if it has
        one: rerank and embed requests then share its runners, runs and overload bound)."""
        if spec.scorer == "cosine":
            if embeds_with is None:
                raise ModelUnavailable(f"{spec.id} needs {spec.embedder}, which did not load")
            return CosineReranker(spec, embeds_with)
        assert spec.onnx and spec.tokenizer
        config = self.session_config
        session = open_session(self.graph(spec, spec.onnx, config), config)
        tok_path = self.store.path(spec, spec.tokenizer)
        return CrossEncoderReranker(
            spec,
            session,
            load_tokenizer(tok_path, spec.max_tokens),
            load_tokenizer(tok_path, spec.max_tokens),
            self.batch_limits,
        )
