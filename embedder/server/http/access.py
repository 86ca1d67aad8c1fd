"""Request ids and the structured access log (JSON lines). Sizes and ids only: the texts a
request carries may be private and never reach a log."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

import falcon
import orjson

log = logging.getLogger("embedder.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestLog:
    """Echoes (or makes) X-Request-Id; with `enabled`, writes one JSON line per request."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.pid = os.getpid()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-Id") or ""
        req.context.request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
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
