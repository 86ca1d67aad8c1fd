"""A Python client for the service, on the standard library (plus numpy for vectors).

It talks JSON-RPC to `rpc.sock` by default (any socket that serves /rpc will do, admin.sock
too). Given a TCP URL it uses what TCP serves by default: `embed`, `rerank` and `health` go
over the OpenAI-style REST API; the other methods (and `embed_compact`, `embed(query=True)`)
need JSON-RPC there, which the server offers on TCP only with EMBEDDER_TCP_EXPOSE=rpc. One
HTTP/1.1 connection per thread is kept alive; a connection the server closed while idle is
reopened once, which is safe because every method is read-only. Errors come back typed:
`RpcError` and its subclasses for JSON-RPC errors (REST errors map onto the same classes),
`HttpError` for a listener that refuses the request, `ServiceUnreachable` and `ServiceTimeout`
for transport failures.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from embedder.client.rest import RestCalls
from embedder.client.types import (
    _BY_CODE,
    CompactEmbedResult,
    EmbedResult,
    Health,
    HttpError,
    ModelInfo,
    RerankHit,
    RpcError,
    ServiceTimeout,
    ServiceUnreachable,
    Status,
    _EmbedMeta,
    _health,
    _model,
)
from embedder.client.unixhttp import UnixHTTPConnection
from embedder.settings import default_socket_root


class Client:
    """JSON-RPC client. Safe to share between threads (each thread gets its own connection)."""

    def __init__(
        self,
        socket_path: Path | None = None,
        *,
        url: str | None = None,
        timeout: float = 60,
        api_key: str | None = None,
    ) -> None:
        if socket_path is not None and url is not None:
            raise ValueError("give socket_path or url, not both")
        self.url = url
        self.socket_path = None if url else Path(socket_path or _default_socket())
        self.timeout, self.api_key = timeout, api_key
        self.address = url or str(self.socket_path)
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._rest = RestCalls(self)

    # --- methods ------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        *,
        quality: int | None = None,
        model: str | None = None,
        query: bool = False,
    ) -> EmbedResult:
        """`query` adds the model's retrieval instruction (BGE), if it has one."""
        if self.url is not None and not query:
            return self._rest.embed(_texts(texts), quality, model)
        r, meta = self._embed(texts, quality, model, query, "float")
        vectors = np.asarray(r["embeddings"], dtype=np.float32).reshape(len(texts), meta.dims)
        vectors.setflags(write=False)
        return EmbedResult(**vars(meta), vectors=vectors)

    def embed_compact(
        self,
        texts: Sequence[str],
        *,
        quality: int | None = None,
        model: str | None = None,
        query: bool = False,
    ) -> CompactEmbedResult:
        """A quarter (int8) or half (fp16) of the float payload; decode with `to_float`."""
        r, meta = self._embed(texts, quality, model, query, "compact")
        scales = tuple(r["scale"]) if r.get("scale") is not None else None
        vectors = tuple(tuple(v) for v in r["embeddings"])
        return CompactEmbedResult(
            **vars(meta), precision=r["encoding"], vectors=vectors, scales=scales
        )

    def rerank(
        self,
        query: str,
        docs: Sequence[str | tuple[str | int, str]],
        *,
        top_k: int | None = None,
        model: str | None = None,
        raw: bool = False,
    ) -> list[RerankHit]:
        """Best first. Plain-string docs get their position as id."""
        wire = [
            {"id": i, "text": d} if isinstance(d, str) else {"id": d[0], "text": d[1]}
            for i, d in enumerate(docs)
        ]
        if self.url is not None:
            return self._rest.rerank(query, wire, top_k, model, raw)
        params: dict[str, Any] = {"query": query, "docs": wire, "raw": raw}
        params.update({k: v for k, v in (("top_k", top_k), ("model", model)) if v is not None})
        r = self.call("rerank", params)
        return [RerankHit(str(h["id"]), int(h["index"]), float(h["score"])) for h in r]

    def health(self) -> Health:
        if self.url is not None:
            return _health(self._rest.get("/health"))
        return _health(self.call("health"))

    def status(self) -> Status:
        r = self.call("status")
        models = tuple(_model(m) for m in r.get("models", ()))
        aliases = dict(r.get("aliases") or {})
        uptime = float(r["uptime_s"])
        return Status(_health(r), r["catalog"], r["models_root"], uptime, models, aliases, r)

    def models(self) -> list[ModelInfo]:
        """Every model of the instance, with its state (`models.describe`)."""
        return [_model(m) for m in self.call("models.describe")]

    def model_ids(self) -> list[str]:
        """The ids of the models ready to serve (`models.list`)."""
        return [str(m) for m in self.call("models.list")]

    def mem_info(self) -> dict[str, Any]:
        """RSS of the master and each worker, system RAM, model bytes on disk."""
        return dict(self.call("mem_info"))

    def ort_info(self) -> dict[str, Any]:
        return dict(self.call("ort_info"))

    def discover(self) -> dict[str, Any]:
        """The OpenRPC document."""
        return dict(self.call("rpc.discover"))

    # --- transport ----------------------------------------------------------------------

    def _embed(
        self, texts: Sequence[str], quality: int | None, model: str | None, query: bool, fmt: str
    ) -> tuple[dict[str, Any], _EmbedMeta]:
        params: dict[str, Any] = {"texts": _texts(texts), "query": query, "format": fmt}
        params.update({k: v for k, v in (("quality", quality), ("model", model)) if v is not None})
        r = self.call("embed", params)
        counts = tuple(r["token_counts"])
        return r, _EmbedMeta(r["model"], r["quality"], r["dimensions"], r["tokens"], counts)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One JSON-RPC request; the `result`, or a typed error."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params is not None:
            msg["params"] = params
        status, raw = self._post(json.dumps(msg).encode())
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) and "jsonrpc" in body else None
        if isinstance(err, dict) and isinstance(code := err.get("code"), int):
            cls = _BY_CODE.get(code, RpcError)
            raise cls(code, str(err.get("message", "")), err.get("data"))
        if status != 200 or not isinstance(body, dict) or "result" not in body:
            raise HttpError(status, self._http_message(status, body, raw))
        return body["result"]

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self.socket_path is not None:
            conn = UnixHTTPConnection(self.socket_path, self.timeout)
        else:
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must look like http://host:port, got {self.url!r}")
            https = parts.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def _post(self, data: bytes) -> tuple[int, bytes]:
        return self.send("POST", "/rpc", data)

    def send(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP request on this thread's connection: (status, body)."""
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        path = (urlsplit(self.url).path.rstrip("/") if self.url else "") + path
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, body
            except TimeoutError as e:
                self.close()
                raise ServiceTimeout(f"no answer from {self.address} in {self.timeout}s") from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: reopen once
                raise ServiceUnreachable(f"{self.address} closed the connection: {e}") from e
            except OSError as e:
                self.close()
                raise ServiceUnreachable(self._unreachable(e)) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, e: OSError) -> str:
        why = e.strerror or str(e)
        if self.socket_path is None:
            return f"cannot reach hero_embedder_provider at {self.url}: {why}"
        return (
            f"cannot reach hero_embedder_provider on {self.socket_path}: {why}. Is the service "
            "running, with the same PATH_SOCKETS (and as a user allowed into that directory)?"
        )

    def _http_message(self, status: int, body: Any, raw: bytes) -> str:
        detail = raw[:300].decode(errors="replace")
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = str(body["error"].get("message", detail))
        elif isinstance(body, dict) and "description" in body:
            detail = str(body["description"])
        hint = ""
        if status == 404 and self.url and "EMBEDDER_TCP_EXPOSE" not in detail:
            hint = " (JSON-RPC is served on TCP only when the server sets EMBEDDER_TCP_EXPOSE=rpc)"
        return f"HTTP {status} from {self.address}: {detail}{hint}"


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    return list(texts)


def _default_socket() -> Path:
    """Only the socket root matters to a client: the server's other settings, valid or not,
    are none of its business."""
    return default_socket_root(os.environ) / "hero_embedder_provider" / "rpc.sock"
