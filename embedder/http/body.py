"""Reading a JSON request body within limits, before any of it reaches the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon
import orjson

from embedder.errors import InvalidInput, TooLarge
from embedder.http.deadline import WATCHDOG

_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int = 16 * 1024 * 1024
    timeout: float = 30.0  # seconds for a whole body to arrive


def read_json(req: falcon.Request, limits: BodyLimits) -> Any:
    """The parsed body. An announced size over the limit is refused before reading any of it;
    a chunked body is read only up to the limit. `curl -d` sends form-urlencoded by default,
    so that type is accepted when the body is JSON; other media types are refused."""
    ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(
            title="unsupported media type",
            description=f"send JSON with Content-Type: application/json (got {ctype})",
        )
    length = req.content_length
    max_bytes = limits.max_bytes
    if length is not None and length > max_bytes:
        raise TooLarge(f"request body is {length} bytes; the limit is {max_bytes}", param=None)
    raw = _read_within(req, max_bytes, limits.timeout)
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON: {exc}") from None


def _read_within(req: falcon.Request, max_bytes: int, timeout: float) -> bytes:
    """Read the body, cutting the connection if it has not all arrived in `timeout` seconds."""
    sock = req.env.get("gunicorn.socket")
    if sock is None:
        return _read(req, max_bytes)
    token = WATCHDOG.arm(sock, timeout)
    try:
        raw = _read(req, max_bytes)
    except Exception as exc:
        if not WATCHDOG.disarm(token):
            raise _timed_out(timeout) from exc
        raise
    if not WATCHDOG.disarm(token):
        raise _timed_out(timeout)
    return raw


def _timed_out(timeout: float) -> falcon.HTTPError:
    return falcon.HTTPError(
        falcon.HTTP_408,
        title="request timeout",
        description=f"the request body did not arrive within {timeout:g} s",
    )


def _read(req: falcon.Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    stream = req.bounded_stream
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"request body is over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def read_object(req: falcon.Request, limits: BodyLimits) -> dict[str, Any]:
    """The body, which must be a JSON object (REST endpoints take nothing else)."""
    body = read_json(req, limits)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def model_name(value: object) -> str | None:
    """The optional `model` parameter every endpoint and method takes."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput("model must be a string", param="model")
    return value
