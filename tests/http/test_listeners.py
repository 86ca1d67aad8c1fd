"""What each listener serves, told apart by the accepted socket gunicorn hands the app."""

from __future__ import annotations

from typing import Any

import falcon.testing
import orjson
import pytest

from embedder.http.app import HttpOptions, create_app
from embedder.service import Service
from tests.http.conftest import on

EMBED = orjson.dumps({"input": "hi"})
RPC = orjson.dumps({"jsonrpc": "2.0", "method": "health", "id": 1})
JSON = {"Content-Type": "application/json"}


def status(c: falcon.testing.TestClient, listeners: dict[str, Any], name: str, what: str) -> int:
    extras = on(listeners, name)
    if what == "embed":
        r = c.simulate_post("/v1/embeddings", body=EMBED, headers=JSON, extras=extras)
    elif what == "rpc":
        r = c.simulate_post("/rpc", body=RPC, headers=JSON, extras=extras)
    elif what == "admin":
        r = c.simulate_get("/", extras=extras)
    else:
        r = c.simulate_get("/health", extras=extras)
    return r.status_code


MATRIX = {
    # listener: (embed, rpc, admin, health) — 404 means not served there
    "rest.sock": (200, 404, 404, 200),
    "rpc.sock": (404, 200, 404, 200),
    "admin.sock": (200, 200, None, 200),
    "tcp": (200, 404, 404, 200),
}


@pytest.mark.parametrize("listener", sorted(MATRIX))
def test_listener_matrix(client, listeners, listener: str) -> None:
    for what, want in zip(("embed", "rpc", "admin", "health"), MATRIX[listener], strict=True):
        got = status(client, listeners, listener, what)
        if want is None:
            assert got != 404 or what == "admin"  # admin page served where installed
        else:
            assert got == want, (listener, what, got)


def test_tcp_refusal_says_how_to_enable(client, listeners) -> None:
    r = client.simulate_post("/rpc", body=RPC, headers=JSON, extras=on(listeners, "tcp"))
    assert "EMBEDDER_TCP_EXPOSE=rpc" in r.json["error"]["message"]


def test_tcp_expose_rpc(starter_service: Service, listeners) -> None:
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(tcp_expose=("rpc",))))
    assert status(c, listeners, "tcp", "rpc") == 200


def test_api_key_on_tcp_only(starter_service: Service, listeners) -> None:
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(api_key="s3cret")))
    assert status(c, listeners, "tcp", "embed") == 401
    assert status(c, listeners, "tcp", "health") == 200
    assert status(c, listeners, "rest.sock", "embed") == 200
    ok = c.simulate_post(
        "/v1/embeddings",
        body=EMBED,
        headers={**JSON, "Authorization": "Bearer s3cret"},
        extras=on(listeners, "tcp"),
    )
    assert ok.status_code == 200
    bad = c.simulate_post(
        "/v1/embeddings",
        body=EMBED,
        headers={**JSON, "Authorization": "Bearer nope"},
        extras=on(listeners, "tcp"),
    )
    assert bad.status_code == 401
