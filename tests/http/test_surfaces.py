"""What each listener serves, told apart by the accepted socket gunicorn hands the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest

from embedder.server.http.app import HttpOptions, create_app
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
    # EMBEDDER_BIND=unix:/elsewhere/admin.sock: not the socket folder's, so served as TCP
    "elsewhere/admin.sock": (200, 404, 404, 200),
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


def test_tcp_expose_rpc(starter_service: Service, listeners, socket_dir: Path) -> None:
    opts = HttpOptions(tcp_expose=("rpc",), socket_dir=socket_dir)
    c = falcon.testing.TestClient(create_app(starter_service, opts))
    assert status(c, listeners, "tcp", "rpc") == 200
    assert status(c, listeners, "elsewhere/admin.sock", "rpc") == 200
    assert status(c, listeners, "elsewhere/admin.sock", "admin") == 404


def test_api_key_on_every_listener_but_the_socket_folders(
    starter_service: Service, listeners, socket_dir: Path
) -> None:
    opts = HttpOptions(api_key="s3cret", socket_dir=socket_dir)
    c = falcon.testing.TestClient(create_app(starter_service, opts))
    assert status(c, listeners, "tcp", "embed") == 401
    assert status(c, listeners, "tcp", "health") == 200
    assert status(c, listeners, "elsewhere/admin.sock", "embed") == 401
    assert status(c, listeners, "elsewhere/admin.sock", "rpc") == 401
    assert status(c, listeners, "elsewhere/admin.sock", "health") == 200
    for name in ("rest.sock", "rpc.sock", "admin.sock"):
        assert status(c, listeners, name, "health") == 200
    assert status(c, listeners, "rest.sock", "embed") == 200
    assert status(c, listeners, "rpc.sock", "rpc") == 200
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


def test_unknown_listeners_fail_closed(starter_service: Service, listeners) -> None:
    """Issue 23 item 4: a listener the app cannot name as one of the socket folder's three got
    everything, unkeyed. Now it is served as TCP is: an app told of no socket folder serves
    even sockets named rest.sock, rpc.sock and admin.sock so, and the service's own app (which
    runs under gunicorn) does the same with a request that came with no socket at all."""
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(api_key="s3cret")))
    for name in ("rest.sock", "rpc.sock", "admin.sock", "elsewhere/admin.sock"):
        assert status(c, listeners, name, "embed") == 401, name
        assert status(c, listeners, name, "health") == 200, name
    key = {"Authorization": "Bearer s3cret"}
    for name in ("rpc.sock", "admin.sock"):
        r = c.simulate_post("/rpc", body=RPC, headers={**JSON, **key}, extras=on(listeners, name))
        assert r.status_code == 404 and "EMBEDDER_TCP_EXPOSE=rpc" in r.text, (name, r.text)
    served = HttpOptions(api_key="s3cret", trust_in_process=False)
    c = falcon.testing.TestClient(create_app(starter_service, served))
    assert c.simulate_post("/v1/embeddings", body=EMBED, headers=JSON).status_code == 401
    assert c.simulate_get("/health").status_code == 200
    r = c.simulate_post("/rpc", body=RPC, headers={**JSON, **key})
    assert r.status_code == 404 and "(direct)" in r.text, r.text
    ok = c.simulate_post("/v1/embeddings", body=EMBED, headers={**JSON, **key})
    assert ok.status_code == 200


# Issue 15 item 1: spellings of a path that the router reads as another surface's route.
# Each pair: the request target as sent, the canonical route it would reach.
AMBIGUOUS = [
    "//rpc",
    "///rpc",
    "/%2Frpc",
    "/%2frpc",
    "/./rpc",
    "/x/../rpc",
    "/v1/%2E%2E/rpc",
    "//metrics",
    "//static/index.html",
    "/static//index.html",
    "//",
    "/%2F",
    "/rpc//",
    "/v1//embeddings",
    "//health",
]


@pytest.mark.parametrize("target", AMBIGUOUS)
@pytest.mark.parametrize("listener", ["tcp", "admin.sock"])
def test_ambiguous_paths_are_refused_on_every_listener(
    client, listeners, listener: str, target: str
) -> None:
    r = client.simulate_request(
        "POST", target, body=RPC, headers=JSON, extras=on(listeners, listener)
    )
    assert r.status_code == 400, (target, r.status_code, r.text[:200])
    assert r.json["error"]["code"] == "ambiguous_path"


def test_surface_comes_from_the_matched_route(client, listeners) -> None:
    """What the router matched decides the surface, whatever the raw path says: a request
    reaching /rpc with a RAW_URI that reads as REST (as a SCRIPT_NAME rewrite would) is
    still refused on TCP, and the legitimate spellings of a route keep working."""
    tcp = on(listeners, "tcp")
    rewritten = client.simulate_post(
        "/rpc", body=RPC, headers=JSON, extras={**tcp, "RAW_URI": "/v1/embeddings"}
    )
    assert rewritten.status_code == 404 and "EMBEDDER_TCP_EXPOSE=rpc" in rewritten.text
    for path in ("/rpc", "/rpc/", "/rpc?x=1"):
        r = client.simulate_post(path, body=RPC, headers=JSON, extras=tcp)
        assert r.status_code == 404 and "not_served_here" in r.text, (path, r.status_code)
        ok = client.simulate_post(path, body=RPC, headers=JSON, extras=on(listeners, "rpc.sock"))
        assert ok.status_code == 200, (path, ok.status_code)
    for path in ("/metrics", "/static/index.html", "/"):
        assert client.simulate_get(path, extras=tcp).status_code == 404, path
    assert client.simulate_get("/RPC", extras=tcp).status_code == 404  # routes are case-exact
    assert client.simulate_get("/health/", extras=tcp).status_code == 200


def test_route_decides_even_past_the_path_check(client, listeners, monkeypatch) -> None:
    """The second fence alone: with the ambiguity check switched off, `//rpc` (which the router
    matches to /rpc) is still refused on TCP, because the matched route decides."""
    import embedder.server.http.surfaces as guard

    monkeypatch.setattr(guard, "ambiguity", lambda raw, path: None)
    tcp = on(listeners, "tcp")
    r = client.simulate_post("//rpc", body=RPC, headers=JSON, extras=tcp)
    assert r.status_code == 404 and "EMBEDDER_TCP_EXPOSE=rpc" in r.text, r.text
    assert client.simulate_get("//metrics", extras=tcp).status_code == 404


def _templates(nodes: list[Any]) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        if node.resource is not None:
            out.add(node.uri_template)
        out |= _templates(node.children)
    return out


def test_every_route_has_a_surface(client) -> None:
    """A route missing from ROUTE_SURFACES is served nowhere: adding one means naming its
    surface."""
    from embedder.server.http.surfaces import ROUTE_SURFACES

    routes = _templates(client.app._router._roots)
    assert routes == set(ROUTE_SURFACES), routes ^ set(ROUTE_SURFACES)
