"""Request ids and the structured access log (JSON lines). Sizes and ids only: the texts a
request carries may be private and never reach a log. And the warning for malformed requests,
at most one line per interval."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import falcon
import orjson

log = logging.getLogger("embedder.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# RFC 9562's version (4) and variant bits of a random UUID, as uuid.uuid4() sets them.
_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (4 << 76) | (0x8000 << 48)


def made_id() -> str:
    """A new request id: `uuid.uuid4().hex`, made without the UUID object (its checks cost
    more than the random bytes, on every request that brings no id of its own)."""
    return f"{int.from_bytes(os.urandom(16)) & _KEEP | _SET:032x}"


class RequestLog:
    """Echoes (or makes) X-Request-Id; with `enabled`, writes one JSON line per request."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.pid = os.getpid()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-Id") or ""
        req.context.request_id = given if _SAFE_ID.match(given) else made_id()
        req.context.t0 = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool
    ) -> None:
        rid = getattr(req.context, "request_id", None)
        if rid is None:
            return
        resp.set_header("X-Request-Id", rid)
        if not self.enabled:
            return
        t0 = getattr(req.context, "t0", time.perf_counter())
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "request_id": rid,
            "method": req.method,
            "route": req.uri_template or req.path,
            "listener": getattr(req.context, "listener", None),
            "model": getattr(req.context, "model", None),
            "texts": getattr(req.context, "texts", None),
            "tokens": getattr(req.context, "tokens", None),
            "status": int(str(resp.status).split(" ", 1)[0]),
            "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
            "worker": self.pid,
        }
        log.info("%s", orjson.dumps(entry).decode())


class Throttled:
    """A warning that anyone can trigger (a malformed request) logged at most once per
    `interval` seconds: a flood of bad requests would otherwise flood the log. What is left
    out is counted, and said by the next line or by `flush` once the interval is over."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what  # how the flush line names them, e.g. "malformed requests"
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")  # when the next line may be written
        self._left_out = 0

    def warning(self, msg: str, *args: object) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._left_out += 1
                return
            left_out, self._left_out = self._left_out, 0
            self._next = now + self.interval
        if left_out:
            msg += f" ({left_out} more since the last such line, not logged)"
        self.logger.warning(msg, *args)

    def flush(self) -> None:
        """Say how many were left out, once the interval they fell in is over."""
        with self._lock:
            now = self.clock()
            if not self._left_out or now < self._next:
                return
            left_out, self._left_out = self._left_out, 0
            self._next = now + self.interval
        self.logger.warning("%d more %s, not logged", left_out, self.what)
