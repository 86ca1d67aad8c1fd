"""Reading request bodies: chunked like Content-Length, one size limit, readable errors."""

from __future__ import annotations

import io
from typing import Any

import falcon.testing
import orjson

JSON = {"Content-Type": "application/json"}
CHUNKED = {**JSON, "Transfer-Encoding": "chunked"}
NO_LENGTH = {"CONTENT_LENGTH": ""}  # what gunicorn hands the app for a chunked body


def chunked_post(client: falcon.testing.TestClient, path: str, body: bytes) -> Any:
    return client.simulate_post(path, body=body, headers=CHUNKED, extras=NO_LENGTH)


def test_chunked_bodies_are_read_on_rest_and_rpc(client) -> None:
    """Issue 15 item 5: they got 400 'request body is empty' and -32700."""
    r = chunked_post(client, "/v1/embeddings", orjson.dumps({"input": "hello"}))
    assert r.status_code == 200, r.text
    assert len(r.json["data"]) == 1
    rpc = orjson.dumps({"jsonrpc": "2.0", "method": "health", "id": 7})
    r = chunked_post(client, "/rpc", rpc)
    assert r.status_code == 200 and r.json["id"] == 7 and "result" in r.json, r.text


def test_chunked_bodies_over_the_limit_are_413(client) -> None:
    big = orjson.dumps({"input": "x" * (2 * 1024 * 1024)})  # the client's limit is 1 MiB
    r = chunked_post(client, "/v1/embeddings", big)
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large", r.text
    rpc = orjson.dumps({"jsonrpc": "2.0", "method": "embed", "params": {"texts": ["x" * 2**21]}})
    r = chunked_post(client, "/rpc", rpc)
    assert r.status_code == 413 and r.json["error"]["code"] == -32004, r.text


class _Broken(io.RawIOBase):
    """A body gunicorn cannot decode: its reader raises (bad chunk framing, say)."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise ValueError("Invalid chunk size: b'zz'")


def test_an_undecodable_body_is_400_not_500(client) -> None:
    r = client.simulate_post(
        "/v1/embeddings", headers=CHUNKED, extras={**NO_LENGTH, "wsgi.input": _Broken()}
    )
    assert r.status_code == 400, r.text
    assert "could not be read" in r.json["error"]["message"]
