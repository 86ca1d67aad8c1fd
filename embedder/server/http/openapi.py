"""GET /openapi.json: an OpenAPI 3.1 description of the REST API, checked against real
responses by the tests (and used to fuzz the API)."""

from __future__ import annotations

from typing import Any

import falcon

from embedder import __version__
from embedder.server.http.body import dumps
from embedder.server.http.rpc_schemas import HEALTH

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
        }
    },
}

_EMBED_REQ = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "model": {"type": "string"},
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
}

_EMBED_RESP = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "model": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer", "minimum": 0},
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string"},
                        ]
                    },
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "total_tokens": {"type": "integer", "minimum": 0},
            },
        },
    },
}

_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "kind", "ready"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "kind": {"enum": ["embedding", "rerank"]},
        "level": {"type": ["integer", "null"]},
        "dims": {"type": ["integer", "null"]},
        "max_tokens": {"type": "integer"},
        "precision": {"enum": ["fp32", "int8"]},
        "backend": {
            "enum": ["onnxruntime", "openvino", None],
            "description": "the runtime that computes the model (null until it is loaded)",
        },
        "compute_precision": {
            "enum": ["fp32", "bf16", "int8", None],
            "description": "what it computes in; `precision` is what the vectors are",
        },
        "ready": {"type": "boolean"},
        "state": {"type": "string"},
        "alias_of": {"type": "string"},
    },
}

_RERANK_REQ = {
    "type": "object",
    "required": ["query", "documents"],
    "properties": {
        "model": {"type": "string"},
        "query": {"type": "string", "minLength": 1},
        "documents": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "required": ["text"],
                        "properties": {"text": {"type": "string", "minLength": 1}},
                    },
                ]
            },
        },
        "top_n": {"type": "integer", "minimum": 1},
        "return_documents": {"type": "boolean"},
        "raw_scores": {"type": "boolean"},
    },
}

_RERANK_RESP = {
    "type": "object",
    "required": ["results", "model", "usage"],
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "relevance_score"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "relevance_score": {"type": "number"},
                    "document": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                    },
                },
            },
        },
        "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}},
        "meta": {"type": "object"},
    },
}

_HEALTH = HEALTH  # the same body as JSON-RPC `health`


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", **_json("Error")} for c in codes}


def _post(summary: str, req: str, resp: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_json(req)},
            "responses": {
                "200": {"description": "ok", **_json(resp)},
                **_errors(400, 404, 413, 415, 500, 503),
            },
        }
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hero_embedder_provider",
            "version": __version__,
            "description": "OpenAI-compatible embeddings and Cohere/Jina-compatible rerank.",
        },
        "paths": {
            "/v1/embeddings": _post("Create embeddings", "EmbeddingRequest", "EmbeddingResponse"),
            "/v1/rerank": _post("Rerank documents", "RerankRequest", "RerankResponse"),
            "/v1/models": {
                "get": {
                    "summary": "List models",
                    "responses": {"200": {"description": "ok", **_json("ModelList")}},
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "summary": "One model",
                    "parameters": [
                        {
                            "name": "model_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    # 400: an id that would need an encoded slash or is a dot segment
                    "responses": {
                        "200": {"description": "ok", **_json("Model")},
                        **_errors(400, 404),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Service state (always 200)",
                    "responses": {"200": {"description": "ok", **_json("Health")}},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "EmbeddingRequest": _EMBED_REQ,
                "EmbeddingResponse": _EMBED_RESP,
                "Model": _MODEL,
                "ModelList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
                    },
                },
                "RerankRequest": _RERANK_REQ,
                "RerankResponse": _RERANK_RESP,
                "Health": _HEALTH,
            }
        },
    }


class OpenApiResource:
    def __init__(self) -> None:
        self.body = dumps(document())

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self.body
        resp.content_type = falcon.MEDIA_JSON
