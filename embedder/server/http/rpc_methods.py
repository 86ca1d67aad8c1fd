"""The JSON-RPC methods and their OpenRPC description (`rpc.discover`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from embedder import __version__
from embedder.encoder import to_fp16, to_int8
from embedder.errors import EmbedderError, InvalidInput
from embedder.reranker import Doc
from embedder.server.http import rpc_schemas as S
from embedder.server.http.body import flag, model_name
from embedder.server.http.rpc import Method, Param
from embedder.server.system import mem_info
from embedder.service import Service
from embedder.sessions import ort_info

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
            texts, model=model_name(model), quality=quality, query=flag(query, "query")
        )
        out: dict[str, Any] = {"model": spec.id, "quality": spec.level}
        if format == "float":
            # A person reads the model's precision; a program reads the encoding.
            precision = "int8" if spec.precision == "int8" else "fp32"
            out.update(precision=precision, encoding="float32", embeddings=list(res.vectors))
        elif spec.precision == "int8":
            q, scales = to_int8(res.vectors)
            out.update(precision="int8", encoding="int8", embeddings=q.tolist(), scale=scales)
        else:
            vectors = to_fp16(res.vectors).astype("f4").tolist()
            out.update(precision="fp16", encoding="fp16", embeddings=vectors)
        out.update(
            dimensions=int(res.vectors.shape[1]), tokens=res.total_tokens, token_counts=res.tokens
        )
        return out

    def rerank(
        query: Any, docs: Any, top_k: Any = None, model: Any = None, raw: Any = False
    ) -> list[dict[str, Any]]:
        _, ranking = service.rerank(
            query, parse_docs(docs), model=model_name(model), top_k=top_k, raw=flag(raw, "raw")
        )
        return [{"id": r.id, "score": r.score, "index": r.index} for r in ranking.results]

    def memory() -> dict[str, Any]:
        info = mem_info(master_pid)
        info["models_disk"] = {s.id: service.store.disk_size(s) for s in service.specs}
        return info

    methods = [
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
            lambda: service.health()["models_loaded"],
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
            memory,
            "RSS of the master and every worker; system RAM; disk.",
            result=S.MEM_INFO,
        ),
        Method(
            "ort_info",
            ort_info,
            "ONNX Runtime version, library path, providers.",
            result=S.ORT_INFO,
        ),
        Method(
            "embed",
            embed,
            "Embed texts; compact vectors (int8 + scale for INT8 levels, fp16 otherwise).",
            params=(
                Param("texts", _TEXTS, True, "texts to embed"),
                Param(
                    "quality",
                    {"type": "integer", "minimum": 1, "maximum": 4},
                    False,
                    "quality level; with model, both must name the same model",
                ),
                Param("model", {"type": "string"}, False, "model id or alias"),
                Param("query", {"type": "boolean"}, False, "add the query instruction"),
                Param(
                    "format",
                    {"enum": ["compact", "float"]},
                    False,
                    "compact (int8 + scale or fp16, the default) or float32",
                ),
            ),
            result=S.EMBED,
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
                Param("raw", {"type": "boolean"}, False, "unmapped scores (logits, cosines)"),
            ),
            result=S.RERANK,
            result_only=True,
        ),
    ]

    def discover() -> dict[str, Any]:
        return openrpc(methods)

    methods.append(Method("rpc.discover", discover, "This OpenRPC document.", result=S.DISCOVER))
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
