"""HTTP/1.1 client pieces for the load generator: loopback TCP or a unix socket only."""

from __future__ import annotations

import http.client

from embedder.client.unixhttp import UnixHTTPConnection

_TOKENS = b'"total_tokens":'


def connect(target: str, timeout: float) -> http.client.HTTPConnection:
    """`tcp:HOST:PORT` (loopback only) or `unix:/path/rest.sock`."""
    kind, _, rest = target.partition(":")
    if kind == "unix":
        return UnixHTTPConnection(rest, timeout)
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise ValueError(f"target must be tcp:<loopback>:<port> or unix:<path>, not {target!r}")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def total_tokens(body: bytes) -> int:
    """usage.total_tokens without decoding the whole answer (vectors are most of it)."""
    at = body.rfind(_TOKENS)
    if at < 0:
        return 0
    digits = bytearray()
    for ch in body[at + len(_TOKENS) :]:
        if 48 <= ch <= 57:
            digits.append(ch)
        elif digits or ch != 32:
            break
    return int(digits or b"0")


def post_json(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes, float]:
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    try:
        retry = float(resp.getheader("Retry-After") or 1)
    except ValueError:
        retry = 1.0
    return resp.status, data, retry
