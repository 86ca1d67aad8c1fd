"""The OpenAI-compatible REST API through falcon.testing, on real starter models."""

from __future__ import annotations

import base64

import falcon.testing
import numpy as np
import orjson
import pytest

from embedder.catalog import STARTER
from embedder.server.http.app import HttpOptions, create_app
from embedder.service import Service
from embedder.store.files import ModelStore

TEXTS = ["The cat sat on the mat.", "日本語のテキスト 🙂", "שלום עולם — مرحبا", "e\u0301\u0308"]


def post(client: falcon.testing.TestClient, body: object) -> falcon.testing.Result:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    return client.simulate_post("/v1/embeddings", body=data, headers=headers)


def error_of(result: falcon.testing.Result) -> dict[str, object]:
    err = result.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "Traceback" not in err["message"]
    return err  # type: ignore[no-any-return]


def test_float_embeddings_match_the_engine(client, starter_service: Service) -> None:
    r = post(client, {"input": TEXTS, "model": "all-minilm-l6-v2", "encoding_format": "float"})
    assert r.status_code == 200, r.text
    body = r.json
    assert body["object"] == "list" and body["model"] == "all-minilm-l6-v2"
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    ref = starter_service.embed(TEXTS, starter_service.resolve("all-minilm-l6-v2"))
    np.testing.assert_array_equal(got, ref.vectors)
    assert body["usage"] == {"prompt_tokens": ref.total_tokens, "total_tokens": ref.total_tokens}


def test_base64_is_little_endian_float32(client, starter_service: Service) -> None:
    r = post(
        client, {"input": "hello", "model": "text-embedding-3-small", "encoding_format": "base64"}
    )
    assert r.status_code == 200
    raw = base64.b64decode(r.json["data"][0]["embedding"])
    vec = np.frombuffer(raw, dtype="<f4")
    ref = starter_service.embed(["hello"], starter_service.resolve("text-embedding-3-small"))
    np.testing.assert_array_equal(vec, ref.vectors[0])


def test_default_model_and_string_input(client) -> None:
    r = post(client, {"input": "one string"})
    assert r.status_code == 200 and len(r.json["data"]) == 1


def test_dimensions_truncate_and_renormalise(client) -> None:
    r = post(client, {"input": ["a", "b"], "dimensions": 64})
    vecs = np.array([d["embedding"] for d in r.json["data"]])
    assert vecs.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dims", [0, -3, 385, "8", 2.5])
def test_bad_dimensions(client, dims: object) -> None:
    r = post(client, {"input": "a", "dimensions": dims, "model": "all-minilm-l6-v2"})
    assert r.status_code == 400
    assert error_of(r)["param"] == "dimensions"


def test_token_arrays_are_refused_with_a_hint(client) -> None:
    for inp in ([1, 2, 3], [[1, 2], [3]]):
        r = post(client, {"input": inp})
        assert r.status_code == 400
        assert "check_embedding_ctx_length" in str(error_of(r)["message"])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": None},
        {"input": []},
        {"input": ""},
        {"input": 5},
        {"input": ["ok", 3]},
        {"input": [["nested"]]},
        {"input": "x", "encoding_format": "int4"},
        # Issue 15 item 7: falsy values were read as the default "float".
        {"input": "x", "encoding_format": ""},
        {"input": "x", "encoding_format": 0},
        {"input": "x", "encoding_format": []},
        {"input": "x", "encoding_format": {}},
        {"input": "x", "encoding_format": False},
        # Whitespace-only gave 200 (the same vector for all), "" gave 400: one rule now.
        {"input": "   "},
        {"input": ["ok", " \n\t"]},
        {"input": "\u3000"},
        {"input": "x", "model": 7},
    ],
)
def test_bad_input_is_400(client, body: object) -> None:
    r = post(client, body)
    assert r.status_code == 400, r.text
    assert error_of(r)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"   ", b"[1, 2]", b"[" * 10000 + b"]" * 10000, b"1" * 400, b"\xff\xfe"],
)
def test_malformed_bodies_are_400(client, raw: bytes) -> None:
    r = post(client, raw)
    assert r.status_code == 400, r.text
    error_of(r)


def test_whitespace_only_input_says_so(client) -> None:
    r = post(client, {"input": ["fine", "  "]})
    assert r.status_code == 400
    assert str(error_of(r)["message"]).startswith(
        "input[1] has nothing to read: it is empty, or only"
    )


def test_encoding_format_null_is_the_default(client) -> None:
    assert post(client, {"input": "x", "encoding_format": None}).status_code == 200


def test_duplicate_keys_take_the_last(client) -> None:
    r = post(client, b'{"input": 5, "input": "fine"}')
    assert r.status_code == 200


@pytest.mark.parametrize(
    "ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/ld+json"]
)
def test_json_sent_as_another_text_type_is_accepted(client, ctype: str | None) -> None:
    """The seed's curl examples send no content type (curl -d says form-urlencoded): the body
    is what counts, and the README says so."""
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.simulate_post("/v1/embeddings", body=b'{"input": "x"}', headers=headers)
    assert r.status_code == 200, r.text


def test_wrong_content_type_is_415(client) -> None:
    r = client.simulate_post(
        "/v1/embeddings", body=b"input=x", headers={"Content-Type": "multipart/form-data"}
    )
    assert r.status_code == 415
    error_of(r)


def test_unknown_model_is_404(client) -> None:
    r = post(client, {"input": "x", "model": "gpt-5"})
    assert r.status_code == 404
    assert error_of(r)["code"] == "model_not_found"


def test_too_many_inputs_is_413(client, starter_service: Service) -> None:
    n = starter_service.limits.max_inputs + 1
    r = post(client, {"input": ["x"] * n})
    assert r.status_code == 413


def test_body_over_the_limit_is_413(client) -> None:
    big = orjson.dumps({"input": "x" * (2 * 1024 * 1024)})
    r = post(client, big)
    assert r.status_code == 413


def test_over_long_input_is_truncated_and_counted(client) -> None:
    r = post(client, {"input": "word " * 2000, "model": "all-minilm-l6-v2"})
    assert r.status_code == 200
    assert r.json["usage"]["prompt_tokens"] == 256


def test_not_ready_is_503_with_retry_after(starter_store: ModelStore) -> None:
    cold = Service(STARTER, starter_store)  # never loaded
    c = falcon.testing.TestClient(create_app(cold, HttpOptions()))
    r = post(c, {"input": "x"})
    assert r.status_code == 503
    assert r.headers.get("Retry-After")
    assert error_of(r)["code"] == "model_not_ready"
    assert c.simulate_get("/health").json["status"] == "starting"


def test_internal_errors_hide_details(starter_service: Service, monkeypatch) -> None:
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions()))

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(starter_service, "embed", boom)
    r = post(c, {"input": "x"})
    assert r.status_code == 500
    assert "secret" not in r.text
    assert error_of(r)["type"] == "server_error"


def test_models_list(client) -> None:
    r = client.simulate_get("/v1/models")
    assert r.status_code == 200
    data = {m["id"]: m for m in r.json["data"]}
    m = data["all-minilm-l6-v2"]
    assert m["object"] == "model" and m["dims"] == 384 and m["ready"] is True
    assert m["max_tokens"] == 256 and m["precision"] == "fp32"
    assert data["text-embedding-3-large"]["alias_of"] == "all-minilm-l6-v2"
    one = client.simulate_get("/v1/models/text-embedding-3-small")
    assert one.status_code == 200 and one.json["alias_of"] == "all-minilm-l6-v2-int8"
    assert client.simulate_get("/v1/models/nope").status_code == 404


def test_health(client) -> None:
    r = client.simulate_get("/health")
    assert r.status_code == 200 and r.json["status"] == "ok"
