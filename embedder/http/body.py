"""Reading a JSON request body within limits, before any of it reaches the engine."""

from __future__ import annotations

from typing import Any

import falcon
import orjson

from embedder.errors import InvalidInput, TooLarge

_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")
_CHUNK = 64 * 1024


def read_json(req: falcon.Request, max_bytes: int) -> Any:
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
    if length is not None and length > max_bytes:
        raise TooLarge(f"request body is {length} bytes; the limit is {max_bytes}", param=None)
    raw = _read(req, max_bytes)
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON: {exc}") from None


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
