"""What the client returns and raises: typed results and errors (`embedder.client`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ClientError(Exception):
    """Base of everything the client raises."""


class RpcError(ClientError):
    """A JSON-RPC error object: `code`, `message` and the server's `data` (type, param, ...)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC {code})")
        self.code, self.message, self.data = code, message, data


class NotReadyError(RpcError):
    """-32001: the model is still downloading or loading; retry after `data.retry_after` s."""


class UnknownModelError(RpcError):
    """-32002: no model, alias or quality level by that name in the server's catalog."""


class InvalidParamsError(RpcError):
    """-32602: the request's params were refused (empty texts, bad top_k, wrong types)."""


class HttpError(ClientError):
    """The listener answered with an HTTP error and no JSON-RPC body (404 off rpc, 401, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServiceUnreachable(ClientError, ConnectionError):
    """Nothing answers at the address: the service is not running, or runs elsewhere."""


class ServiceTimeout(ClientError, TimeoutError):
    """The service accepted the request but did not answer within the client's timeout."""


_BY_CODE: dict[int, type[RpcError]] = {
    -32001: NotReadyError,
    -32002: UnknownModelError,
    -32602: InvalidParamsError,
}

# The wire's pairing of REST error codes (OpenAI's `code` field) with JSON-RPC codes: the
# service's API contract, so REST errors raise the same classes as JSON-RPC's. A test holds it
# to the server's error table.
RPC_BY_REST_CODE: dict[str, int] = {
    "invalid_input": -32602,
    "too_large": -32004,
    "model_not_found": -32002,
    "model_not_ready": -32001,
    "model_unavailable": -32003,
    "model_download_failed": -32006,
    "model_broken": -32010,
    "overloaded": -32005,
    "client_gone": -32007,
}


@dataclass(frozen=True, eq=False)
class _EmbedMeta:
    model: str
    quality: int | None
    dims: int
    tokens: int
    token_counts: tuple[int, ...]  # per text; empty over REST (TCP), which gives only the sum


@dataclass(frozen=True, eq=False)
class EmbedResult(_EmbedMeta):
    """Float32 vectors, unit length, one row per input text (a read-only array)."""

    vectors: np.ndarray

    def __repr__(self) -> str:
        return _repr(self, f"<{_shape(self.vectors)} float32>")


@dataclass(frozen=True)
class CompactEmbedResult(_EmbedMeta):
    """The wire's compact form: int8 rows with per-row `scales` (the seed's `scale`:
    v ≈ q x scale), or fp16-rounded floats (`scales` None). `to_float` decodes it."""

    precision: str  # "int8" | "fp16"
    vectors: tuple[tuple[float, ...], ...]
    scales: tuple[float, ...] | None

    def __repr__(self) -> str:
        return _repr(self, f"<{_shape(self.vectors)} {self.precision}>")

    def to_float(self) -> np.ndarray:
        v = np.asarray(self.vectors, dtype=np.float32).reshape(len(self.vectors), self.dims)
        return v if self.scales is None else v * np.asarray(self.scales, np.float32)[:, None]


@dataclass(frozen=True)
class RerankHit:
    id: str  # the caller's id (as a string), or the position for plain-text docs
    index: int  # position in the caller's list
    score: float


@dataclass(frozen=True)
class Health:
    status: str  # starting | ok | degraded | error
    models_ready: bool  # every model of the instance is ready
    models_loaded: tuple[str, ...] = ()  # the models that are ready
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kind: str
    level: int | None
    dims: int | None
    max_tokens: int
    precision: str
    state: str
    ready: bool
    error: str | None
    disk_bytes: int
    raw: dict[str, Any] = field(repr=False, compare=False)  # every field the server sent


@dataclass(frozen=True)
class Status:
    health: Health
    catalog: str
    models_root: str
    uptime_s: float
    models: tuple[ModelInfo, ...]
    aliases: dict[str, str]
    raw: dict[str, Any] = field(repr=False, compare=False)  # downloads and anything newer


def _shape(vectors: Any) -> str:
    rows = len(vectors)
    return f"{rows}x{len(vectors[0]) if rows else 0}"


def _repr(result: _EmbedMeta, vectors: str) -> str:
    """What a result is, without its numbers: thousands of floats help nobody in a REPL or log."""
    counts = result.token_counts
    shown = str(counts)
    if len(counts) > 8:
        shown = f"({', '.join(map(str, counts[:8]))}, ... {len(counts)} in all)"
    fields = f"model={result.model!r}, quality={result.quality}, dims={result.dims}, "
    fields += f"tokens={result.tokens}, token_counts={shown}, vectors={vectors}"
    return f"{type(result).__name__}({fields})"


def _health(r: dict[str, Any]) -> Health:
    loaded = tuple(r.get("models_loaded", ()))
    return Health(r["status"], bool(r["models_ready"]), loaded, dict(r.get("errors") or {}))


def _model(r: dict[str, Any]) -> ModelInfo:
    basics = (r["id"], r["kind"], r.get("level"), r.get("dims"), int(r["max_tokens"]))
    state = (r["precision"], r.get("state", ""), bool(r.get("ready")), r.get("error"))
    return ModelInfo(*basics, *state, int(r.get("disk_bytes") or 0), r)
