"""POST /v1/rerank with the exact request shapes Cohere's and Jina's clients send."""

from __future__ import annotations

import falcon.testing
import orjson
import pytest

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Paris is the capital and most populous city of France.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific.",
]
QUERY = "What is the capital of France?"


def post(client: falcon.testing.TestClient, path: str, body: object) -> falcon.testing.Result:
    return client.simulate_post(
        path, body=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )


def test_cohere_v1_shape(client) -> None:
    body = {
        "model": "minilm-cosine-rerank",
        "query": QUERY,
        "documents": [{"text": d} for d in DOCS],
        "top_n": 3,
        "return_documents": False,
        "max_chunks_per_doc": 10,
    }
    r = post(client, "/v1/rerank", body)
    assert r.status_code == 200, r.text
    out = r.json
    assert out["results"][0]["index"] == 1
    assert len(out["results"]) == 3
    assert "document" not in out["results"][0]
    scores = [x["relevance_score"] for x in out["results"]]
    assert scores == sorted(scores, reverse=True)
    assert out["model"] == "minilm-cosine-rerank" and out["usage"]["total_tokens"] > 0


def test_cohere_v2_path_and_strings(client) -> None:
    r = post(
        client,
        "/v2/rerank",
        {"model": "minilm-cosine-rerank", "query": QUERY, "documents": DOCS, "top_n": 2},
    )
    assert r.status_code == 200 and r.json["results"][0]["index"] == 1


def test_jina_shape_returns_documents(client) -> None:
    body = {
        "model": "minilm-cosine-rerank",
        "query": QUERY,
        "documents": DOCS,
        "top_n": 4,
        "return_documents": True,
    }
    r = post(client, "/rerank", body)
    assert r.status_code == 200
    first = r.json["results"][0]
    assert first["document"] == {"text": DOCS[1]}


def test_default_model_and_all_documents(client) -> None:
    r = post(client, "/v1/rerank", {"query": QUERY, "documents": DOCS})
    assert r.status_code == 200 and len(r.json["results"]) == len(DOCS)


@pytest.mark.parametrize(
    "body",
    [
        {"query": QUERY},
        {"query": QUERY, "documents": "not a list"},
        {"query": QUERY, "documents": [{"no": "text"}]},
        {"query": QUERY, "documents": [1, 2]},
        {"query": "", "documents": DOCS},
        {"documents": DOCS},
        {"query": QUERY, "documents": DOCS, "top_n": 0},
        {"query": QUERY, "documents": DOCS, "top_n": -2},
        {"query": QUERY, "documents": DOCS, "return_documents": "yes"},
        {"query": QUERY, "documents": DOCS, "raw_scores": "false"},
        {"query": " ", "documents": DOCS},
        {"query": QUERY, "documents": ["fine", "\n"]},
        {"query": QUERY, "documents": DOCS, "model": "all-minilm-l6-v2"},
    ],
)
def test_bad_requests_are_400(client, body: object) -> None:
    r = post(client, "/v1/rerank", body)
    assert r.status_code == 400, r.text
    assert set(r.json["error"]) == {"message", "type", "param", "code"}


def test_unknown_rerank_model_is_404(client) -> None:
    r = post(
        client, "/v1/rerank", {"model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS}
    )
    assert r.status_code == 404


def test_empty_documents_are_refused(client) -> None:
    r = post(client, "/v1/rerank", {"query": QUERY, "documents": []})
    assert r.status_code == 400 and r.json["error"]["param"] == "documents"
