"""Reading a JSON request body within limits, before any of it reaches the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon
import orjson

from embedder.errors import InvalidInput, TooLarge
from embedder.server.http.deadline import Watchdog

_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int = 16 * 1024 * 1024
    timeout: float = 30.0  # seconds for a whole body to arrive


class BodyReader:
    """Reads request bodies within the app's limits. Each app has one, with the app's own
    watchdog (one per gunicorn worker), so nothing about a body deadline is process-global."""

    def __init__(self, limits: BodyLimits, watchdog: Watchdog) -> None:
        self.limits = limits
        self.watchdog = watchdog

    def json(self, req: falcon.Request) -> Any:
        """The parsed body, read within the size limit and the body deadline, whether it comes
        with a Content-Length or chunked. `curl -d` sends form-urlencoded by default, so that
        type is accepted when the body is JSON; other media types are refused."""
        ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
        if ctype and ctype not in _JSON_TYPES and not ctype.endswith("+json"):
            raise falcon.HTTPUnsupportedMediaType(
                title="unsupported media type",
                description=f"send JSON with Content-Type: application/json (got {ctype})",
            )
        raw = self._read_within(req)
        if not raw.strip():
            raise InvalidInput("request body is empty; send a JSON object")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"invalid JSON: {exc}") from None

    def object(self, req: falcon.Request) -> dict[str, Any]:
        """The body, which must be a JSON object (REST endpoints take nothing else)."""
        body = self.json(req)
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return body

    def _read_within(self, req: falcon.Request) -> bytes:
        """Read the body; if it has not all arrived in `limits.timeout` seconds the socket's
        read side is shut (the blocked read returns) and the client gets a 408. The service's
        worker reads bodies in its poller and hands over only whole ones, and says so on the
        socket (`whole`): there is nothing to wait for, so no deadline is armed (arming one
        cost every request a lock round and the deadline thread a wake-up when it expired).
        A chunked body it found over the limit it leaves unread and says so too
        (`over_limit`)."""
        limits = self.limits
        sock = req.env.get("gunicorn.socket")
        if getattr(sock, "over_limit", False):
            raise TooLarge(f"request body is over the {limits.max_bytes}-byte limit")
        if sock is None or getattr(sock, "whole", False):
            return _read(req, limits)
        token = self.watchdog.arm(sock, limits.timeout)
        try:
            raw = _read(req, limits)
        except TooLarge:
            self.watchdog.disarm(token)
            raise
        except Exception as exc:
            if not self.watchdog.disarm(token):
                raise _timed_out(limits.timeout) from exc
            raise
        if not self.watchdog.disarm(token):
            raise _timed_out(limits.timeout)
        return raw


def _timed_out(timeout: float) -> falcon.HTTPError:
    return falcon.HTTPError(
        falcon.HTTP_408,
        title="request timeout",
        description=f"the request body did not arrive within {timeout:g} s",
    )


def _read(req: falcon.Request, limits: BodyLimits) -> bytes:
    """The whole body, or TooLarge once it is known to pass `max_bytes`, reading no more of
    it: what is left is the server's to drain (the service's worker does it in its poller,
    embedder.server.http.outbox), never an HTTP thread's. gunicorn's wsgi.input undoes the
    chunked framing; falcon's bounded stream reads nothing without a Content-Length, so
    chunked bodies use the raw stream. A body of known length is asked for whole: one read,
    not a second one to find its end."""
    max_bytes = limits.max_bytes
    length = req.content_length
    if length is not None:
        if length > max_bytes:
            raise TooLarge(f"request body is {length} bytes; the limit is {max_bytes}", param=None)
        return _read_length(req.bounded_stream, length)
    te = (req.get_header("Transfer-Encoding") or "").lower()
    stream = req.stream if "chunked" in te else req.bounded_stream
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = _next(stream, _CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"request body is over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_length(stream: Any, length: int) -> bytes:
    """`length` bytes, or what came before the stream ended."""
    chunks: list[bytes] = []
    left = length
    while left > 0:
        chunk = _next(stream, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _next(stream: Any, size: int) -> bytes:
    """One read of up to `size` bytes; a body the server cannot decode (bad chunk framing,
    cut short) is the client's mistake, so a 400 rather than an internal error."""
    try:
        return bytes(stream.read(size))
    except Exception as exc:
        raise InvalidInput(f"the request body could not be read: {exc}") from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def flag(value: object, name: str) -> bool:
    """An optional boolean parameter: true, false, or absent/null. Strings such as "false"
    are refused rather than read as true."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be a boolean (true or false)", param=name)
    return value


def model_name(value: object) -> str | None:
    """The optional `model` parameter every endpoint and method takes."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput("model must be a string", param="model")
    return value
