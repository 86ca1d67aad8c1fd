"""POST /v1/rerank (and /rerank): the request and response shapes of Cohere's and Jina's
rerank APIs, which LangChain, LlamaIndex, Dify and most RAG stacks already speak."""

from __future__ import annotations

import uuid
from typing import Any

import falcon

from embedder.errors import InvalidInput
from embedder.reranker import Doc
from embedder.server.http.body import BodyReader, dumps, flag, model_name
from embedder.service import Service


def parse_documents(value: object) -> list[Doc]:
    """Strings or {"text": ...} objects (Cohere v1/v2, Jina); ids are their positions."""
    if not isinstance(value, list):
        raise InvalidInput(
            "documents must be a list of strings or {text} objects", param="documents"
        )
    docs: list[Doc] = []
    for i, d in enumerate(value):
        if isinstance(d, dict):
            d = d.get("text")
        if not isinstance(d, str):
            raise InvalidInput(
                f"documents[{i}] must be a string or an object with a text field",
                param="documents",
            )
        docs.append(Doc(id=str(i), text=d))
    return docs


class RerankResource:
    def __init__(self, service: Service, reader: BodyReader) -> None:
        self.service = service
        self.reader = reader

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.reader.object(req)
        docs = parse_documents(body.get("documents"))
        top_n = body.get("top_n", body.get("top_k"))
        model = model_name(body.get("model"))
        return_documents = flag(body.get("return_documents"), "return_documents")
        raw = flag(body.get("raw_scores"), "raw_scores")
        spec, ranking = self.service.rerank(
            body.get("query"), docs, model=model, top_k=top_n, raw=raw
        )
        req.context.model = spec.id
        req.context.texts, req.context.tokens = len(docs), ranking.tokens
        results: list[dict[str, Any]] = []
        for r in ranking.results:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
            if return_documents:
                item["document"] = {"text": docs[r.index].text}
            results.append(item)
        resp.data = dumps(
            {
                "id": str(uuid.uuid4()),
                "results": results,
                "model": model or spec.id,
                "usage": {"total_tokens": ranking.tokens},
                "meta": {"billed_units": {"search_units": 1}},
            }
        )
        resp.content_type = falcon.MEDIA_JSON
