"""The client's calls over the OpenAI-style REST API: what a TCP listener serves by default.

`Client(url=...)` embeds, reranks and reads `/health` here; REST errors come back as the same
typed errors as JSON-RPC's: the service gives each error the same meaning on both APIs (an
OpenAI-style `code` string on REST, a number on JSON-RPC), and `types` pairs them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from .transport import Transport
from .types import _BY_CODE, RPC_BY_REST_CODE, EmbedResult, HttpError, RerankHit, RpcError


class RestCalls:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._levels: dict[str, int | None] | None = None  # read once

    def get(self, path: str) -> Any:
        return self._answer(*self.transport.send("GET", path))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._answer(*self.transport.send("POST", path, json.dumps(body).encode()))

    def embed(self, texts: list[str], quality: int | None, model: str | None) -> EmbedResult:
        if quality is not None:
            model = self._model_for(quality)
        body: dict[str, Any] = {"input": texts, "encoding_format": "base64"}
        if model is not None:
            body["model"] = model
        r = self.post("/v1/embeddings", body)
        rows = sorted(r["data"], key=lambda d: d["index"])
        raw = b"".join(base64.b64decode(d["embedding"]) for d in rows)
        vectors = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(len(rows), -1)
        vectors.setflags(write=False)
        level = quality if quality is not None else self._level_of(r["model"])
        tokens = int(r["usage"]["total_tokens"])
        return EmbedResult(r["model"], level, int(vectors.shape[1]), tokens, (), vectors)

    def rerank(
        self,
        query: str,
        docs: list[dict[str, Any]],
        top_k: int | None,
        model: str | None,
        raw: bool,
    ) -> list[RerankHit]:
        body: dict[str, Any] = {
            "query": query,
            "documents": [d["text"] for d in docs],
            "raw_scores": raw,
        }
        body.update({k: v for k, v in (("top_n", top_k), ("model", model)) if v is not None})
        r = self.post("/v1/rerank", body)
        return [
            RerankHit(str(docs[h["index"]]["id"]), int(h["index"]), float(h["relevance_score"]))
            for h in r["results"]
        ]

    def _model_for(self, quality: int) -> str:
        by_id = self._read_levels()
        ids = {lv: m for m, lv in by_id.items() if lv is not None}
        if quality not in ids:
            raise _BY_CODE[-32602](-32602, f"quality must be one of {sorted(ids)}", None)
        return ids[quality]

    def _level_of(self, model: str) -> int | None:
        return self._read_levels().get(model)

    def _read_levels(self) -> dict[str, int | None]:
        """Model id or alias -> quality level (aliases first, so a level maps to the id)."""
        if self._levels is None:
            data = self.get("/v1/models")["data"]
            data.sort(key=lambda m: "alias_of" in m, reverse=True)
            self._levels = {m["id"]: m.get("level") for m in data if m.get("kind") == "embedding"}
        return self._levels

    def _answer(self, status: int, raw: bytes) -> Any:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if status == 200 and body is not None:
            return body
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("code") in RPC_BY_REST_CODE:
            code = RPC_BY_REST_CODE[err["code"]]
            cls = _BY_CODE.get(code, RpcError)
            data = {"type": err.get("type"), "code": err["code"], "param": err.get("param")}
            raise cls(code, str(err.get("message", "")), data)
        raise HttpError(status, self.transport.http_message(status, body, raw))
