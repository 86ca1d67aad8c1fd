"""Attacks on which surface a request reaches and on how its body is read, against a real
gunicorn on loopback TCP and its unix sockets (issue 15 items 1, 5, 7; issue 11 part 3).

| attack                                         | what must hold                               |
|------------------------------------------------|----------------------------------------------|
| `//rpc`, `/%2Frpc`, `/./rpc`, absolute form... | never served on TCP: 400 (ambiguous) or 404   |
| a `Script_Name:` header rewriting the path     | dropped: the request is served as sent        |
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

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
