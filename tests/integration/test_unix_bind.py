"""EMBEDDER_BIND set to a unix socket outside the service's socket folder, against a real
gunicorn (issue 23 item 4).

The three sockets in the socket folder (owner-only, 0700) are told apart by their full path;
any other listener is served as TCP is: the REST API and /health only (plus what
EMBEDDER_TCP_EXPOSE names), behind EMBEDDER_API_KEY. A socket elsewhere named like one of
the three (`/elsewhere/admin.sock`) is not one of them.

| request on the EMBEDDER_BIND socket | without the key          | with the key              |
|-------------------------------------|--------------------------|---------------------------|
| /rpc (mem_info), /metrics, /        | 401                      | 404 (not served here)     |
| /v1/models, /v1/embeddings          | 401                      | 200                       |
| /health                             | 200                      | 200                       |
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from tests.integration import server as srv

pytestmark = pytest.mark.integration

KEY = "unix-bind-key-91c2"
MODEL = "paraphrase-minilm-l3-v2"
BEARER = {"Authorization": f"Bearer {KEY}"}
MEM_INFO = {"jsonrpc": "2.0", "method": "mem_info", "id": 1}
# What a leak of each guarded surface would show in the answer.
LEAKS = (b'"result"', b"# HELP", b"<html", b"<!doctype", b"rss")


def _request(
    sock: Path, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(sock, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["x.sock", "admin.sock"])
def bound(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, built_root: Path
) -> Iterator[tuple[srv.Server, Path]]:
    """One worker whose EMBEDDER_BIND is a unix socket in a folder of its own (no TCP)."""
    tmp = tmp_path_factory.mktemp("unixbind")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    sock = elsewhere / request.param
    server = srv.start(
        tmp,
        built_root,
        workers=1,
        tcp=False,
        extra_env={
            "EMBEDDER_BIND": f"unix:{sock}",
            "EMBEDDER_API_KEY": KEY,
            "EMBEDDER_MODELS": MODEL,
        },
    )
    try:
        server.wait_ready(120)
        yield server, sock
    finally:
        server.stop()


def test_a_unix_bind_is_served_like_tcp(bound: tuple[srv.Server, Path]) -> None:
    server, sock = bound
    guarded = [
        ("POST", "/rpc", MEM_INFO),
        ("GET", "/metrics", None),
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/embeddings", {"input": "hi", "model": MODEL}),
    ]
    for method, path, body in guarded:
        status, raw = _request(sock, method, path, body)
        assert status == 401, (path, status, raw[:200])
        assert not any(leak in raw.lower() for leak in LEAKS), (path, raw[:200])
    for method, path, body in guarded[:4]:
        status, raw = _request(sock, method, path, body, BEARER)
        assert status == 404 and b"EMBEDDER_TCP_EXPOSE" in raw, (path, status, raw[:200])
        assert not any(leak in raw.lower() for leak in LEAKS), (path, raw[:200])
    assert _request(sock, "GET", "/v1/models", None, BEARER)[0] == 200
    embed = {"input": "hi", "model": MODEL}
    assert _request(sock, "POST", "/v1/embeddings", embed, BEARER)[0] == 200
    assert _request(sock, "GET", "/health")[0] == 200  # probes need no secret
    # The service's own sockets are as before: guarded by their folder, not by the key.
    assert server.request("rpc.sock", "POST", "/rpc", MEM_INFO)[0] == 200
    assert server.request("admin.sock", "GET", "/metrics")[0] == 200
