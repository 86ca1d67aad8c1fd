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
# all-MiniLM-L6-v2 gives "a kitten playing with yarn" a negative cosine with the first two
# (-0.10, -0.08 when this was written).
OPPOSITES = ["SELECT * FROM users WHERE id = 1;", "東京は日本の首都です", "Bananas are yellow."]


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


def test_unknown_rerank_model_is_404_naming_the_rerankers(client) -> None:
    r = post(client, "/v1/rerank", {"model": "no-such-reranker", "query": QUERY, "documents": DOCS})
    assert r.status_code == 404
    assert "rerankers here: minilm-cosine-rerank" in r.json["error"]["message"]


@pytest.mark.parametrize(
    "name", ["rerank-english-v3.0", "rerank-multilingual-v3.0", "rerank-v3.5", "jina-reranker-v2"]
)
def test_cohere_and_jina_model_names_mean_the_served_reranker(client, name: str) -> None:
    """Their clients send those names, often fixed in code: the served reranker answers."""
    r = post(client, "/v1/rerank", {"model": name, "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    plain = post(client, "/v1/rerank", {"query": QUERY, "documents": DOCS})
    assert r.json["results"] == plain.json["results"]
    assert r.json["model"] == name


def test_empty_documents_are_refused(client) -> None:
    r = post(client, "/v1/rerank", {"query": QUERY, "documents": []})
    assert r.status_code == 400 and r.json["error"]["param"] == "documents"


def test_cosine_scores_are_mapped_into_0_1(client) -> None:
    """Cohere-style clients expect relevance in [0, 1]: (cos + 1) / 2; raw_scores: the cosine."""
    body = {"query": "a kitten playing with yarn", "documents": OPPOSITES}
    mapped = post(client, "/v1/rerank", body).json["results"]
    raw = post(client, "/v1/rerank", {**body, "raw_scores": True}).json["results"]
    assert [x["index"] for x in mapped] == [x["index"] for x in raw]
    cosines = [x["relevance_score"] for x in raw]
    assert min(cosines) < 0, f"no negative cosine among {cosines}: the test shows nothing"
    for m, r in zip(mapped, raw, strict=True):
        assert 0 <= m["relevance_score"] <= 1
        assert abs(m["relevance_score"] - (r["relevance_score"] + 1) / 2) < 1e-6
