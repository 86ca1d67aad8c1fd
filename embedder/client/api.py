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

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .rest import RestCalls
from .transport import Transport, default_socket
from .types import (
    _BY_CODE,
    CompactEmbedResult,
    EmbedResult,
    Health,
    HttpError,
    ModelInfo,
    RerankHit,
    RpcError,
    Status,
    _EmbedMeta,
    _health,
    _model,
)


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
        self.socket_path = None if url else Path(socket_path or default_socket())
        self.timeout, self.api_key = timeout, api_key
        self._transport = Transport(self.socket_path, url, timeout, api_key)
        self.address = self._transport.address
        self._ids = itertools.count(1)
        self._rest = RestCalls(self._transport)

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
        status, raw = self.send("POST", "/rpc", json.dumps(msg).encode())
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) and "jsonrpc" in body else None
        if isinstance(err, dict) and isinstance(code := err.get("code"), int):
            cls = _BY_CODE.get(code, RpcError)
            raise cls(code, str(err.get("message", "")), err.get("data"))
        if status != 200 or not isinstance(body, dict) or "result" not in body:
            raise HttpError(status, self._transport.http_message(status, body, raw))
        return body["result"]

    def send(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP request on this thread's connection: (status, body)."""
        return self._transport.send(method, path, data)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    return list(texts)
