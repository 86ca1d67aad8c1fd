"""OpenAI-compatible REST resources: /v1/embeddings, /v1/models, /health."""

from __future__ import annotations

import base64
import time
from typing import Any

import falcon
import numpy as np

from embedder.errors import InvalidInput
from embedder.server.http.body import BodyReader, dumps, model_name
from embedder.service import Service

_TOKEN_ARRAYS = (
    "input looks like token ids (arrays of integers); this server tokenizes itself and token "
    "ids from another tokenizer (tiktoken) mean nothing to its models: send strings "
    "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_input(value: object) -> object:
    """Strings pass to the engine's validation; token arrays are refused with a clear hint."""
    if isinstance(value, list) and value:
        first = value[0]
        if _is_int(first) or (isinstance(first, list) and first and _is_int(first[0])):
            raise InvalidInput(_TOKEN_ARRAYS, param="input")
    if value is None:
        raise InvalidInput("input is required: a string or a list of strings", param="input")
    return value


def encode_float_rows(vectors: np.ndarray, fmt: str) -> list[Any]:
    if fmt == "base64":
        le = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in le]
    return list(vectors)


class EmbeddingsResource:
    def __init__(self, service: Service, reader: BodyReader) -> None:
        self.service = service
        self.reader = reader

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.reader.object(req)
        texts = parse_input(body.get("input"))
        fmt = body.get("encoding_format")
        if fmt is None:  # absent or null: OpenAI's default
            fmt = "float"
        if not isinstance(fmt, str) or fmt not in ("float", "base64"):
            raise InvalidInput(
                "encoding_format must be 'float' or 'base64'", param="encoding_format"
            )
        model = model_name(body.get("model"))
        spec = self.service.resolve(model)
        req.context.model = spec.id
        result = self.service.embed(texts, spec, dimensions=body.get("dimensions"))
        req.context.texts, req.context.tokens = len(result.tokens), result.total_tokens
        rows = encode_float_rows(result.vectors, fmt)
        total = result.total_tokens
        resp.data = dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": row}
                    for i, row in enumerate(rows)
                ],
                "model": model or spec.id,
                "usage": {"prompt_tokens": total, "total_tokens": total},
            }
        )
        resp.content_type = falcon.MEDIA_JSON


def model_entry(info: dict[str, Any], created: int) -> dict[str, Any]:
    return {"object": "model", "created": created, "owned_by": "hero_embedder_provider", **info}


class ModelsResource:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.created = int(time.time())

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        data = [model_entry(m, self.created) for m in self.service.models()]
        by_id = {m["id"]: m for m in data}
        for alias, target in self.service.catalog.aliases.items():
            if target in by_id:
                data.append({**by_id[target], "id": alias, "alias_of": target})
        resp.data = dumps({"object": "list", "data": data})
        resp.content_type = falcon.MEDIA_JSON

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model_id: str) -> None:
        spec = self.service.catalog.get(model_id)
        info = model_entry(self.service.model_status(spec), self.created)
        if spec.id != model_id:
            info = {**info, "id": model_id, "alias_of": spec.id}
        resp.data = dumps(info)
        resp.content_type = falcon.MEDIA_JSON


class HealthResource:
    """Always 200, so supervisors do not flap while models load; the body says the state."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = dumps(self.service.health())
        resp.content_type = falcon.MEDIA_JSON
