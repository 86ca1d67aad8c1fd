"""POST /v1/rerank (and /rerank): the request and response shapes of Cohere's and Jina's
rerank APIs, which LangChain, LlamaIndex, Dify and most RAG stacks already speak.

Their clients also send those APIs' model names, often fixed in their code
(`rerank-english-v3.0`, `jina-reranker-v2-base-multilingual`): here such a name means the
reranker this instance serves, over REST and JSON-RPC alike (`reranker_name`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import falcon

from embedder.catalog import Catalog
from embedder.errors import InvalidInput, UnknownModel
from embedder.reranker import Doc
from embedder.server.http.body import BodyReader, dumps, flag, model_name
from embedder.service import Service

# Model names of the hosted rerank APIs whose request shapes are served here: Cohere's
# (rerank-english-v3.0, rerank-multilingual-v3.0, rerank-v3.5, ...) and Jina's.
HOSTED_RERANKER = re.compile(r"^(rerank-|jina-reranker-)")


def reranker_name(catalog: Catalog, name: str | None) -> str | None:
    """The model a rerank request names, as the service resolves it: a model or alias of the
    catalog as it is; a hosted API's reranker name as None (the catalog's reranker); anything
    else refused with the names that would do."""
    if name is None:
        return None
    try:
        catalog.get(name)
    except UnknownModel:
        if HOSTED_RERANKER.match(name):
            return None
        ids = [m.id for m in catalog.rerankers()]
        ids += sorted(a for a, target in catalog.aliases.items() if target in ids)
        served = ", ".join(ids) or "none"
        raise UnknownModel(
            f"unknown reranker {name!r}; rerankers here: {served} (Cohere's and Jina's model "
            "names, e.g. rerank-english-v3.0, mean the first)",
            param="model",
        ) from None
    return name


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
        asked = model_name(body.get("model"))
        model = reranker_name(self.service.catalog, asked)
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
                "model": asked or spec.id,
                "usage": {"total_tokens": ranking.tokens},
                "meta": {"billed_units": {"search_units": 1}},
            }
        )
        resp.content_type = falcon.MEDIA_JSON
