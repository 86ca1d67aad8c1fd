"""One rule for texts with nothing a model reads (issue 23 item 5): empty, whitespace only, or
only characters the tokenizer drops (control, zero-width and other format characters, lone
combining marks, private-use characters for BERT's tokenizer). Each is refused alike, with
the same message, on REST and JSON-RPC, for embeddings and for reranking; before, the
invisible ones answered 200 with the vector of an empty sequence."""

from __future__ import annotations

from typing import Any

import falcon.testing
import orjson
import pytest

from embedder.errors import InvalidInput
from embedder.server.http.errors import TABLE

JSON = {"Content-Type": "application/json"}
INVALID_PARAMS = TABLE[InvalidInput].rpc
# Nothing a model reads: "" and whitespace are refused before tokenising, the rest after.
BLANK = {
    "empty": "",
    "whitespace": " \n\t",
    "ideographic-space": "\u3000",
    "zero-width-space-x5000": "\u200b" * 5000,
    "nul": "\u0000",
    "format-characters": "\u200b\u200d\ufeff \u2060",
    "lone-combining-mark": "\u0301",
}
# Something to read, however little: kept.
READ = {"accented": "e\u0301", "dot": ".", "emoji": "\U0001f642", "hidden-x": "\u200bx"}
NOTHING = "has nothing to read: it is empty, or only whitespace and characters the tokenizer"


def post(client: falcon.testing.TestClient, path: str, body: Any) -> falcon.testing.Result:
    return client.simulate_post(path, body=orjson.dumps(body), headers=JSON)


def rpc(client: falcon.testing.TestClient, method: str, params: Any) -> dict[str, Any]:
    r = post(client, "/rpc", {"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
    assert r.status_code == 200, r.text
    return r.json  # type: ignore[no-any-return]


@pytest.mark.parametrize("text", BLANK.values(), ids=BLANK.keys())
def test_embeddings_refuse_a_text_with_nothing_to_read(client, text: str) -> None:
    r = post(client, "/v1/embeddings", {"input": ["fine", text]})
    assert r.status_code == 400, r.text[:200]
    err = r.json["error"]
    assert err["param"] == "input" and err["message"].startswith(f"input[1] {NOTHING}"), err
    for query in (False, True):  # the query instruction is not the text's
        out = rpc(client, "embed", {"texts": ["fine", text], "query": query})
        assert out["error"]["code"] == INVALID_PARAMS, out
        assert out["error"]["message"].startswith(f"input[1] {NOTHING}"), out


@pytest.mark.parametrize("text", READ.values(), ids=READ.keys())
def test_a_little_is_enough(client, text: str) -> None:
    assert post(client, "/v1/embeddings", {"input": text}).status_code == 200
    assert "result" in rpc(client, "embed", {"texts": [text], "query": True})


@pytest.mark.parametrize("text", BLANK.values(), ids=BLANK.keys())
def test_rerank_refuses_a_query_or_document_with_nothing_to_read(client, text: str) -> None:
    r = post(client, "/v1/rerank", {"query": "capital", "documents": ["Paris", text]})
    assert r.status_code == 400, r.text[:200]
    err = r.json["error"]
    assert err["param"] == "documents", err
    assert err["message"].startswith(f"documents[1] {NOTHING}"), err
    r = post(client, "/v1/rerank", {"query": text, "documents": ["Paris"]})
    assert r.status_code == 400, r.text[:200]
    err = r.json["error"]
    assert err["param"] == "query" and err["message"].startswith(f"query {NOTHING}"), err
    out = rpc(client, "rerank", {"query": "capital", "docs": [{"id": "a", "text": text}]})
    assert out["error"]["code"] == INVALID_PARAMS, out
    assert out["error"]["message"].startswith(f"documents[0] {NOTHING}"), out
