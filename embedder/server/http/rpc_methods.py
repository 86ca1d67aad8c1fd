"""The JSON-RPC methods and their OpenRPC description (`rpc.discover`).

Two groups, each a small class over the service: `InstanceMethods` say what the instance is and
holds (health, status, models, memory, ONNX Runtime); `WorkMethods` embed and rerank. Names,
params and results are the wire contract the Rust seed fixed: change none of them here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from embedder import __version__
from embedder.catalog import ModelSpec
from embedder.encoder import to_fp16, to_int8
from embedder.errors import EmbedderError, InvalidInput
from embedder.reranker import Doc
from embedder.server.http import rpc_schemas as S
from embedder.server.http.body import flag, model_name
from embedder.server.http.rerank import reranker_name
from embedder.server.http.rpc import Method, Param
from embedder.server.system import mem_info
from embedder.service import Service
from embedder.sessions import ort_info

_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
_DOCS = {
    "type": "array",
    "items": {
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {"id": {"type": ["string", "integer"]}, "text": {"type": "string"}},
                "required": ["id", "text"],
            },
        ]
    },
}
_EMBED_PARAMS = (
    Param("texts", _TEXTS, True, "texts to embed"),
    Param(
        "quality",
        {"type": "integer", "minimum": 1, "maximum": 4},
        False,
        "quality level; with model, both must name the same model",
    ),
    Param("model", {"type": "string"}, False, "model id or alias"),
    Param(
        "query",
        {"type": "boolean"},
        False,
        "prepend the model's retrieval instruction (BGE): for a search's question, not for "
        "the documents it searches",
    ),
    Param(
        "format",
        {"enum": ["compact", "float"]},
        False,
        "compact (int8 + scale or fp16, the default) or float32",
    ),
    Param(
        "dimensions",
        {"type": "integer", "minimum": 1},
        False,
        "keep the first N components, made unit length again (as OpenAI's)",
    ),
)
_RERANK_PARAMS = (
    Param("query", {"type": "string", "minLength": 1}, True),
    Param("docs", _DOCS, True, "{id, text} objects, or strings (their id: their position)"),
    Param("top_k", {"type": "integer", "minimum": 1}),
    Param(
        "model",
        {"type": "string"},
        False,
        "a reranker's id or alias; Cohere's and Jina's "
        "model names (rerank-english-v3.0, ...) mean this instance's reranker",
    ),
    Param("raw", {"type": "boolean"}, False, "unmapped scores (logits, cosines)"),
)


def parse_docs(docs: Any) -> list[Doc]:
    """`{id, text}` objects (the seed's), or plain strings as REST and the client take them,
    whose id is then their position."""
    if not isinstance(docs, list):
        raise InvalidInput("docs must be an array of {id, text} objects or strings", param="docs")
    out: list[Doc] = []
    for i, d in enumerate(docs):
        if isinstance(d, str):
            out.append(Doc(id=str(i), text=d))
            continue
        if not isinstance(d, dict) or "text" not in d or "id" not in d:
            raise InvalidInput(
                f"docs[{i}] must be a string or an object with id and text", param="docs"
            )
        if not isinstance(d["text"], str):
            raise InvalidInput(f"docs[{i}].text must be a string", param="docs")
        if isinstance(d["id"], bool) or not isinstance(d["id"], str | int):
            raise InvalidInput(f"docs[{i}].id must be a string or an integer", param="docs")
        out.append(Doc(id=str(d["id"]), text=d["text"]))
    return out


def encode_vectors(spec: ModelSpec, vectors: np.ndarray[Any, Any], fmt: str) -> dict[str, Any]:
    """The `embed` result's vector fields. "float" sends float32 and names the model's
    precision for a person; "compact" sends what the level keeps: int8 with one scale per
    vector for INT8 levels, fp16 otherwise."""
    if fmt == "float":
        precision = "int8" if spec.precision == "int8" else "fp32"
        return {"precision": precision, "encoding": "float32", "embeddings": list(vectors)}
    if spec.precision == "int8":
        q, scales = to_int8(vectors)
        return {"precision": "int8", "encoding": "int8", "embeddings": q.tolist(), "scale": scales}
    return {
        "precision": "fp16",
        "encoding": "fp16",
        "embeddings": to_fp16(vectors).astype("f4").tolist(),
    }


class InstanceMethods:
    """What the instance is and holds: no model work, cheap, always answered."""

    def __init__(self, service: Service, master_pid: int | None = None) -> None:
        self.service = service
        self.master_pid = master_pid  # mem_info reads the whole process tree from it

    def models_list(self) -> list[str]:
        loaded: list[str] = self.service.health()["models_loaded"]
        return loaded

    def mem_info(self) -> dict[str, Any]:
        info = mem_info(self.master_pid)
        info["models_disk"] = {s.id: self.service.store.disk_size(s) for s in self.service.specs}
        return info

    def methods(self) -> list[Method]:
        service = self.service
        return [
            Method(
                "health",
                service.health,
                "Service state; models_ready: every model is ready.",
                result=S.HEALTH,
            ),
            Method(
                "status",
                service.status,
                "Per-model load state, downloads, catalog, root.",
                result=S.STATUS,
            ),
            Method(
                "models.list",
                self.models_list,
                "Ids of the models ready to serve.",
                result=S.MODEL_IDS,
            ),
            Method(
                "models.describe",
                service.models,
                "Every model of the instance: level, dims, precision, state, error.",
                result=S.MODELS,
            ),
            Method(
                "mem_info",
                self.mem_info,
                "RSS of the master and every worker; system RAM; disk.",
                result=S.MEM_INFO,
            ),
            Method(
                "ort_info",
                ort_info,
                "ONNX Runtime version, library path, the providers the sessions use.",
                result=S.ORT_INFO,
            ),
        ]


class WorkMethods:
    """Embedding and reranking: the calls that run models (and are admitted as work)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def embed(
        self,
        texts: Any,
        quality: Any = None,
        model: Any = None,
        query: Any = False,
        format: Any = "compact",
        dimensions: Any = None,
    ) -> dict[str, Any]:
        if format not in ("compact", "float"):
            raise InvalidInput("format must be 'compact' or 'float'", param="format")
        spec = self.service.resolve(model_name(model), quality)
        res = self.service.embed(texts, spec, query=flag(query, "query"), dimensions=dimensions)
        out: dict[str, Any] = {"model": spec.id, "quality": spec.level}
        out.update(encode_vectors(spec, res.vectors, format))
        out.update(
            dimensions=int(res.vectors.shape[1]), tokens=res.total_tokens, token_counts=res.tokens
        )
        return out

    def rerank(
        self, query: Any, docs: Any, top_k: Any = None, model: Any = None, raw: Any = False
    ) -> list[dict[str, Any]]:
        name = reranker_name(self.service.catalog, model_name(model))
        _, ranking = self.service.rerank(
            query, parse_docs(docs), model=name, top_k=top_k, raw=flag(raw, "raw")
        )
        return [{"id": r.id, "score": r.score, "index": r.index} for r in ranking.results]

    def methods(self) -> list[Method]:
        return [
            Method(
                "embed",
                self.embed,
                "Embed texts; compact vectors (int8 + scale for INT8 levels, fp16 otherwise).",
                params=_EMBED_PARAMS,
                result=S.EMBED,
                result_only=True,
            ),
            Method(
                "rerank",
                self.rerank,
                "Score documents against a query, best first.",
                params=_RERANK_PARAMS,
                result=S.RERANK,
                result_only=True,
            ),
        ]


def build_methods(service: Service, master_pid: int | None = None) -> list[Method]:
    """Every method, in the order `rpc.discover` lists them; the last describes them all."""
    methods = InstanceMethods(service, master_pid).methods() + WorkMethods(service).methods()
    methods.append(
        Method(
            "rpc.discover", lambda: openrpc(methods), "This OpenRPC document.", result=S.DISCOVER
        )
    )
    return methods


def admit_batch(
    service: Service,
) -> Callable[[list[tuple[str, dict[str, Any]]]], AbstractContextManager[None]]:
    """A batch's embed texts (per model) and rerank documents count as one request's, and
    the queue space of both is reserved up front (`Service.batch`)."""

    def admit(calls: list[tuple[str, dict[str, Any]]]) -> AbstractContextManager[None]:
        texts: defaultdict[str, list[object]] = defaultdict(list)
        docs = 0
        reranks: list[tuple[str | None, object, list[Doc]]] = []
        for name, kwargs in calls:
            if name == "embed":
                try:
                    spec = service.resolve(model_name(kwargs.get("model")), kwargs.get("quality"))
                except EmbedderError:
                    continue  # the call fails on its own
                given = kwargs.get("texts")
                texts[spec.id].extend(given if isinstance(given, list) else [given])
            elif name == "rerank":
                given = kwargs.get("docs")
                docs += len(given) if isinstance(given, list) else 0
                try:
                    model = reranker_name(service.catalog, model_name(kwargs.get("model")))
                    reranks.append((model, kwargs.get("query"), parse_docs(given)))
                except EmbedderError:
                    continue  # the call fails on its own
        return service.batch(texts, docs, reranks)

    return admit


def openrpc(methods: list[Method]) -> dict[str, Any]:
    return {
        "openrpc": "1.3.2",
        "info": {"title": "hero_embedder_provider", "version": __version__},
        "methods": [
            {
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "either",
                "params": [
                    {
                        "name": p.name,
                        "required": p.required,
                        "schema": p.schema,
                        **({"description": p.description} if p.description else {}),
                    }
                    for p in m.params
                ],
                "result": {"name": "result", "schema": m.result},
            }
            for m in methods
        ],
    }
