"""Attacks on which surface a request reaches and on how its body is read, against a real
gunicorn on loopback TCP and its unix sockets (issue 15 items 1, 5, 7; issue 11 part 3).

| attack                                         | what must hold                               |
|------------------------------------------------|----------------------------------------------|
| `//rpc`, `/%2Frpc`, `/./rpc`, absolute form... | never served on TCP: 400 (ambiguous) or 404   |
| a `Script_Name:` header rewriting the path     | dropped: the request is served as sent        |
| a chunked body (REST and JSON-RPC)             | read like any other, same size limit          |
| 64 MB sent by http.client (body before reading)| the client reads the 413, no reset            |
| a body that stops arriving                     | 408 once the body deadline passes             |
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from embedder.server.http.errors import RPC_REQUEST_TIMEOUT
from tests.integration import server as srv

pytestmark = pytest.mark.integration

RPC = b'{"jsonrpc":"2.0","method":"mem_info","id":1}'
# What a leak of each surface would show in the answer.
LEAKS = (b'"jsonrpc"', b"# HELP", b"<html", b"<!doctype", b"pid")

# (method, request target) pairs that read as RPC, metrics or dashboard files.
TARGETS = [
    ("POST", "//rpc"),
    ("POST", "///rpc"),
    ("POST", "/%2Frpc"),
    ("POST", "/%2frpc"),
    ("POST", "/./rpc"),
    ("POST", "/x/../rpc"),
    ("POST", "/v1/%2E%2E/rpc"),
    ("POST", "/rpc/"),
    ("POST", "/rpc?x=1"),
    ("POST", "//rpc?x=1"),
    ("POST", "/RPC"),
    ("POST", "/rpc//"),
    ("POST", "http://x/rpc"),
    ("POST", "http://x//rpc"),
    ("POST", "HTTP://x/%2frpc"),
    ("GET", "//metrics"),
    ("GET", "/./metrics"),
    ("GET", "/metrics/"),
    ("GET", "//static/index.html"),
    ("GET", "/static//index.html"),
    ("GET", "/static/./index.html"),
    ("GET", "/static/%2E%2E%2Fembedder%2Fsettings.py"),
    ("GET", "//"),
    ("GET", "/%2F"),
    ("GET", "http://x/"),
]


def raw_request(server: srv.Server, method: str, target: str, extra: bytes = b"") -> bytes:
    """One request written as bytes (no client library normalising the target)."""
    assert server.port is not None
    body = RPC if method == "POST" else b""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head + extra + b"\r\n" + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_no_spelling_reaches_rpc_metrics_or_dashboard_over_tcp(live: srv.Server) -> None:
    seen = {}
    for method, target in TARGETS:
        answer = raw_request(live, method, target)
        seen[target] = status_of(answer)
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert seen[target] in (400, 404), (target, answer[:300])
        assert not any(leak in body for leak in LEAKS), (target, body[:300])
    # The forms that can be read two ways are refused as such, not merely not found.
    for target in ("//rpc", "/%2Frpc", "/./rpc", "http://x//rpc", "//metrics"):
        assert seen[target] == 400, (target, seen[target])


def test_curl_path_as_is(live: srv.Server) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    base = f"http://127.0.0.1:{live.port}"
    for path in ("//rpc", "/%2Frpc", "/./rpc", "//metrics", "//static/index.html"):
        out = subprocess.run(
            [curl, "-s", "--path-as-is", "--max-time", "30", "-w", "\n%{http_code}"]
            + (["-d", RPC.decode()] if "rpc" in path else [])
            + [base + path],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        body, _, code = out.rpartition(b"\n")
        assert code == b"400", (path, code, body[:200])
        assert not any(leak in body for leak in LEAKS), (path, body[:200])


def test_ambiguous_paths_are_refused_on_unix_sockets_too(live: srv.Server) -> None:
    for via in ("rest.sock", "rpc.sock", "admin.sock"):
        status, _, _ = live.request(via, "GET", "//health")
        assert status == 400, via
        assert live.request(via, "GET", "/health")[0] == 200, via


def test_script_name_header_neither_rewrites_nor_breaks(live: srv.Server) -> None:
    """gunicorn trusts loopback peers to set SCRIPT_NAME, which strips a prefix from the path
    (`/x/rpc` became `/rpc`) or, when the path did not start with it, answered
    "500 Bad Request". The header is dropped now: the request is served as sent."""
    ok = raw_request(live, "GET", "/health", b"Script_Name: /foo\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n"), ok[:200]
    prefixed = raw_request(live, "POST", "/foo/rpc", b"Script_Name: /foo\r\n")
    assert status_of(prefixed) == 404 and b'"jsonrpc"' not in prefixed, prefixed[:300]


def _connection(server: srv.Server, via: str) -> http.client.HTTPConnection:
    if via == "tcp":
        assert server.port is not None
        return http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    return UnixHTTPConnection(server.sock(via), timeout=120)


@pytest.mark.parametrize(
    ("via", "path"),
    [("rest.sock", "/v1/embeddings"), ("tcp", "/v1/embeddings"), ("rpc.sock", "/rpc")],
)
def test_http_client_sending_64_mb_reads_the_413(live: srv.Server, via: str, path: str) -> None:
    """Issue 11: http.client writes the whole body before reading; the service answered 413 at
    once and closed, so the client got BrokenPipe. Now the connection is drained after the 413
    until the client closes it (within the body deadline: tests/integration/
    test_protocol_edges.py sends more)."""
    body = b" " * (64 * 1024 * 1024)
    conn = _connection(live, via)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 413, answer
        code = answer["error"]["code"]
        assert code == ("too_large" if path != "/rpc" else -32004), answer
        # The next request is served (http.client reconnects: the 413 closed that one).
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def _pieces(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_chunked_bodies_over_real_sockets(live: srv.Server) -> None:
    for via, path, msg in (
        ("rest.sock", "/v1/embeddings", {"input": ["chunked", "body"]}),
        ("rpc.sock", "/rpc", {"jsonrpc": "2.0", "method": "health", "id": 3}),
        ("tcp", "/v1/embeddings", {"input": "chunked over tcp"}),
    ):
        conn = _connection(live, via)
        try:
            conn.request(
                "POST",
                path,
                body=_pieces(json.dumps(msg).encode(), 7),
                headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                encode_chunked=True,
            )
            resp = conn.getresponse()
            answer = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 200, (via, answer)
        assert ("data" in answer) if path != "/rpc" else answer["result"]["status"] == "ok"
    big = json.dumps({"input": "x" * (17 * 1024 * 1024)}).encode()  # over the 16 MiB limit
    conn = _connection(live, "rest.sock")
    try:
        conn.request(
            "POST",
            "/v1/embeddings",
            body=_pieces(big, 1 << 20),
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 413
    finally:
        conn.close()


@pytest.fixture(scope="module")
def short_deadline(
    tmp_path_factory: pytest.TempPathFactory, built_root: Path
) -> Iterator[srv.Server]:
    """One worker whose body deadline is 1 s."""
    server = srv.start(
        tmp_path_factory.mktemp("deadline"),
        built_root,
        workers=1,
        extra_env={"EMBEDDER_BODY_TIMEOUT": "1", "EMBEDDER_MODELS": "paraphrase-minilm-l3-v2"},
    )
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_stops_arriving_gets_408(short_deadline: srv.Server, framing: str) -> None:
    """Issue 15 item 7: the deadline shut the whole socket, so the client saw the connection
    close with no answer. Now only the read side is shut and the 408 is written."""
    assert short_deadline.port is not None
    if framing == "chunked":
        head = b'Transfer-Encoding: chunked\r\n\r\n8\r\n{"input"'
    else:
        head = b'Content-Length: 100\r\n\r\n{"input": '
    with socket.create_connection(("127.0.0.1", short_deadline.port), timeout=60) as s:
        s.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head
        )
        # Nothing more is sent; the server must answer by itself (the recv timeout of 60 s
        # is only a bound on a broken server, 60x the deadline).
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 408 "), out[:300]
    assert b"did not arrive within 1 s" in out


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_late_body_on_rpc_gets_a_json_rpc_408(short_deadline: srv.Server, framing: str) -> None:
    """Issue 23 item 5: /rpc answered a late body with OpenAI's error shape (from the poller
    for a Content-Length body, from the app's body deadline for a chunked one). Now both are
    JSON-RPC error objects, with the request timeout's own code."""
    if framing == "chunked":
        head = b'Transfer-Encoding: chunked\r\n\r\n8\r\n{"jsonrp'
    else:
        head = b'Content-Length: 100\r\n\r\n{"jsonrpc": '
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)  # a bound on a broken server only: 60x the deadline
        s.connect(str(short_deadline.sock("rpc.sock")))
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 408 "), out[:300]
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["jsonrpc"] == "2.0" and body["id"] is None, body
    assert body["error"]["code"] == RPC_REQUEST_TIMEOUT, body
    assert "did not arrive within 1 s" in body["error"]["message"], body
