"""The JSON-RPC methods and their OpenRPC description (`rpc.discover`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from embedder import __version__
from embedder.encoder import to_fp16, to_int8
from embedder.errors import EmbedderError, InvalidInput
from embedder.http.body import model_name
from embedder.http.rpc import Method, Param
from embedder.reranker import Doc
from embedder.service import Service
from embedder.sessions import ort_info
from embedder.system import mem_info

_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
_DOCS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"id": {"type": ["string", "integer"]}, "text": {"type": "string"}},
        "required": ["id", "text"],
    },
}


def parse_docs(docs: Any) -> list[Doc]:
    if not isinstance(docs, list):
        raise InvalidInput("docs must be an array of {id, text}", param="docs")
    out: list[Doc] = []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or "text" not in d or "id" not in d:
            raise InvalidInput(f"docs[{i}] must be an object with id and text", param="docs")
        if not isinstance(d["text"], str):
            raise InvalidInput(f"docs[{i}].text must be a string", param="docs")
        if isinstance(d["id"], bool) or not isinstance(d["id"], str | int):
            raise InvalidInput(f"docs[{i}].id must be a string or an integer", param="docs")
        out.append(Doc(id=str(d["id"]), text=d["text"]))
    return out


def build_methods(service: Service, master_pid: int | None = None) -> list[Method]:
    def embed(
        texts: Any,
        quality: Any = None,
        model: Any = None,
        query: Any = False,
        format: Any = "compact",
    ) -> dict[str, Any]:
        if format not in ("compact", "float"):
            raise InvalidInput("format must be 'compact' or 'float'", param="format")
        spec, res = service.embed(
            texts, model=model_name(model), quality=quality, query=bool(query)
        )
        out: dict[str, Any] = {
            "model": spec.id,
            "quality": spec.level,
            "dims": int(res.vectors.shape[1]),
            "tokens": res.total_tokens,
            "token_counts": res.tokens,
        }
        if format == "float":
            out.update(precision="fp32", vectors=list(res.vectors))
        elif spec.precision == "int8":
            q, scales = to_int8(res.vectors)
            out.update(precision="int8", vectors=q.tolist(), scales=scales)
        else:
            out.update(precision="fp16", vectors=to_fp16(res.vectors).astype("f4").tolist())
        return out

    def rerank(
        query: Any, docs: Any, top_k: Any = None, model: Any = None, raw: Any = False
    ) -> dict[str, Any]:
        spec, ranking = service.rerank(
            query, parse_docs(docs), model=model_name(model), top_k=top_k, raw=bool(raw)
        )
        return {
            "model": spec.id,
            "scorer": spec.scorer,
            "results": [{"id": r.id, "index": r.index, "score": r.score} for r in ranking.results],
            "tokens": ranking.tokens,
        }

    def memory() -> dict[str, Any]:
        info = mem_info(master_pid)
        info["models_disk"] = {s.id: service.store.disk_size(s) for s in service.specs}
        return info

    methods = [
        Method("health", service.health, "Service state and the models that are ready."),
        Method("status", service.status, "Per-model load state, downloads, catalog, root."),
        Method("models.list", service.models, "Every model with its level, dims and state."),
        Method("mem_info", memory, "RSS of the master and every worker; system RAM; disk."),
        Method("ort_info", ort_info, "ONNX Runtime version, library path, providers."),
        Method(
            "embed",
            embed,
            "Embed texts; compact vectors (int8 + scale for INT8 levels, fp16 otherwise).",
            params=(
                Param("texts", _TEXTS, True, "texts to embed"),
                Param("quality", {"type": "integer", "minimum": 1, "maximum": 4}),
                Param("model", {"type": "string"}, False, "model id or alias"),
                Param("query", {"type": "boolean"}, False, "add the query instruction"),
                Param("format", {"enum": ["compact", "float"]}),
            ),
            result_only=True,
        ),
        Method(
            "rerank",
            rerank,
            "Score documents against a query, best first.",
            params=(
                Param("query", {"type": "string", "minLength": 1}, True),
                Param("docs", _DOCS, True),
                Param("top_k", {"type": "integer", "minimum": 1}),
                Param("model", {"type": "string"}),
                Param("raw", {"type": "boolean"}, False, "raw logits instead of sigmoid"),
            ),
            result_only=True,
        ),
    ]

    def discover() -> dict[str, Any]:
        return openrpc(methods)

    methods.append(Method("rpc.discover", discover, "This OpenRPC document."))
    return methods


def admit_batch(
    service: Service,
) -> Callable[[list[tuple[str, dict[str, Any]]]], AbstractContextManager[None]]:
    """A batch's embed texts (per model) and rerank documents count as one request's."""

    def admit(calls: list[tuple[str, dict[str, Any]]]) -> AbstractContextManager[None]:
        texts: Counter[str] = Counter()
        docs = 0
        for name, kwargs in calls:
            if name == "embed":
                try:
                    spec = service.resolve(model_name(kwargs.get("model")), kwargs.get("quality"))
                except EmbedderError:
                    continue  # the call fails on its own
                given = kwargs.get("texts")
                texts[spec.id] += len(given) if isinstance(given, list) else 1
            elif name == "rerank":
                given = kwargs.get("docs")
                docs += len(given) if isinstance(given, list) else 0
        return service.batch(texts, docs)

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
