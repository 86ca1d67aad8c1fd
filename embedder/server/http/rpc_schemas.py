"""JSON Schemas of the JSON-RPC results, published by `rpc.discover` (tests validate real
responses against them). The field names of `health`, `embed`, `rerank` and `models.list` are
the Rust seed's: clients generated from its OpenRPC document read them."""

from __future__ import annotations

from typing import Any

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_STATE = {"enum": ["starting", "ok", "degraded", "error"]}

HEALTH: dict[str, Any] = {
    "type": "object",
    "required": ["status", "models_ready", "models_loaded"],
    "properties": {
        "status": _STATE,
        "models_ready": {
            "type": "boolean",
            "description": "true once every model of the instance is ready (status ok)",
        },
        "models_loaded": {**_STRINGS, "description": "ids of the models ready to serve"},
        "workers": {"type": "object", "additionalProperties": _STATE},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "why each failed model failed",
        },
        "failures": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "causes shared by several models, said once (errors refer to them)",
        },
        "retry_in": {"type": "number", "description": "seconds until failed downloads retry"},
    },
}

MODEL: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "level", "dims", "max_tokens", "precision", "state", "ready"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"enum": ["embedding", "rerank"]},
        "description": {"type": "string"},
        "source": {"type": "string"},
        "level": {"type": ["integer", "null"]},
        "dims": {"type": ["integer", "null"]},
        "max_tokens": {"type": "integer"},
        "precision": {"type": "string"},
        "pooling": {"type": ["string", "null"]},
        "scorer": {"type": ["string", "null"]},
        "state": {"enum": ["pending", "downloading", "loading", "ready", "error"]},
        "ready": {"type": "boolean"},
        "error": {"type": ["string", "null"]},
        "load_seconds": {"type": ["number", "null"]},
        "backend": {"enum": ["onnxruntime", "openvino", None]},
        "compute_precision": {"enum": ["fp32", "bf16", "int8", None]},
        "disk_bytes": {"type": "integer"},
        "batching": {"type": ["object", "null"]},
        "queue": {
            "type": ["object", "null"],
            "description": "the answering worker's queue for a micro-batched model: texts "
            "reserved, waiting or running, and the seconds of work they are at the rate of "
            "recent runs (null before the first run)",
            "required": ["texts", "seconds"],
            "properties": {
                "texts": {"type": "integer", "minimum": 0},
                "seconds": {"type": ["number", "null"], "minimum": 0},
            },
        },
    },
}

STATUS: dict[str, Any] = {
    "type": "object",
    "required": [*HEALTH["required"], "catalog", "models_root", "uptime_s", "models", "downloads"],
    "properties": {
        **HEALTH["properties"],
        "catalog": {"type": "string"},
        "models_root": {"type": "string"},
        "uptime_s": {"type": "number"},
        "models": {"type": "array", "items": MODEL},
        "downloads": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["state", "bytes_done", "bytes_total", "files"],
                "properties": {
                    "state": {"type": "string"},
                    "bytes_done": {"type": "integer"},
                    "bytes_total": {"type": "integer"},
                    "files": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
        "aliases": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_PROC = {
    "type": "object",
    "required": ["pid", "rss"],
    "properties": {"pid": {"type": "integer"}, "rss": {"type": "integer"}},
}

MEM_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["master", "workers", "answered_by", "system", "models_disk"],
    "properties": {
        "master": {"oneOf": [_PROC, {"type": "null"}]},
        "workers": {"type": "array", "items": _PROC},
        "answered_by": {"type": "integer"},
        "system": {
            "type": "object",
            "required": ["total", "available", "used"],
            "additionalProperties": {"type": "integer"},
        },
        "models_disk": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}

ORT_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["version", "min_version", "version_ok", "library_path", "providers"],
    "properties": {
        "version": {"type": "string"},
        "min_version": {"type": "string"},
        "version_ok": {"type": "boolean"},
        "library_path": {"type": "string"},
        "providers": {**_STRINGS, "description": "the execution providers the sessions use"},
        "available_providers": {
            **_STRINGS,
            "description": "every provider the installed onnxruntime build has",
        },
        "device": {"type": "string"},
    },
}

_NUMBERS = {"type": "array", "items": {"type": "number"}}

EMBED: dict[str, Any] = {
    "type": "object",
    "required": ["embeddings", "precision", "encoding", "dimensions", "quality", "model"],
    "properties": {
        "embeddings": {
            "type": "array",
            "items": _NUMBERS,
            "description": "one vector per text, in order",
        },
        "precision": {
            "enum": ["int8", "fp16", "fp32"],
            "description": "compact form: what the vectors on the wire are (int8 | fp16); "
            "format float: the model's precision (int8 | fp32)",
        },
        "encoding": {
            "enum": ["int8", "fp16", "float32"],
            "description": "what the numbers in `embeddings` are",
        },
        "scale": {
            **_NUMBERS,
            "description": "int8 encoding only: one per embedding, v ≈ embeddings[i] × scale[i]",
        },
        "dimensions": {"type": "integer", "minimum": 1},
        "quality": {"type": ["integer", "null"], "description": "the model's level, if any"},
        "model": {"type": "string"},
        "tokens": {"type": "integer"},
        "token_counts": {"type": "array", "items": {"type": "integer"}},
    },
    "if": {"properties": {"encoding": {"const": "int8"}}},
    "then": {"required": ["scale"]},
    "else": {"not": {"required": ["scale"]}},
}

RERANK: dict[str, Any] = {
    "type": "array",
    "description": "best first (descending score)",
    "items": {
        "type": "object",
        "required": ["id", "score"],
        "properties": {
            "id": {"type": "string"},
            "score": {"type": "number"},
            "index": {"type": "integer", "description": "position in the caller's docs"},
        },
    },
}

MODEL_IDS: dict[str, Any] = {**_STRINGS, "description": "ids of the models ready to serve"}
MODELS: dict[str, Any] = {"type": "array", "items": MODEL}

DISCOVER: dict[str, Any] = {
    "type": "object",
    "required": ["openrpc", "info", "methods"],
    "properties": {
        "openrpc": {"type": "string"},
        "info": {"type": "object"},
        "methods": {"type": "array", "items": {"type": "object"}},
    },
}
