"""HTTP at its edges, against a real gunicorn (issue 23 item 5, the HTTP parts).

| case                                              | what must hold                          |
|---------------------------------------------------|-----------------------------------------|
| HEAD on a GET route                               | the GET answer's head, no body (was 405)|
| HTTP/1.1 without Host                             | 400 (RFC 9112 section 3.2; was 200)     |
| `Transfer-Encoding: xchunked`                     | "501 Not Implemented" (was "501 Bad     |
|                                                   | Request")                               |
| a flood of malformed requests                     | a log line per interval, not per request|
| a body just over 64 MiB sent by http.client       | the client reads the 413 (was a broken  |
|                                                   | pipe: the drain stopped at 64 MiB)      |
| a chunked body over the limit                     | 413 with `Connection: close` (was       |
|                                                   | keep-alive, then the connection closed) |
| connections made just after SIGTERM               | answered or refused, never reset        |
"""

from __future__ import annotations

import http.client
import signal
import socket
from pathlib import Path

import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from tests.integration import server as srv
from tests.polling import PATIENCE

pytestmark = pytest.mark.integration


def _raw(server: srv.Server, request: bytes) -> bytes:
    """Everything the server answers to `request` on a fresh TCP connection, until it closes."""
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _head_and_body(answer: bytes) -> tuple[bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _length(head: bytes) -> int:
    return int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/openapi.json"])
def test_head_answers_as_get_without_the_body(live: srv.Server, path: str) -> None:
    get = _raw(live, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    head = _raw(live, b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    get_head, get_body = _head_and_body(get)
    head_head, head_body = _head_and_body(head)
    assert head_head.startswith(b"HTTP/1.1 200 OK\r\n"), head[:200]
    assert head_body == b"", "HEAD carries no body"
    assert _length(get_head) == len(get_body)
    if path == "/openapi.json":  # the others say what changes from one call to the next
        assert _length(head_head) == _length(get_head)
    else:
        assert _length(head_head) > 0


def test_http_1_1_without_host_is_400(live: srv.Server) -> None:
    no_host = _raw(live, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400 Bad Request\r\n"), no_host[:200]
    assert b"Host" in _head_and_body(no_host)[1]
    old = _raw(live, b"GET /health HTTP/1.0\r\n\r\n")  # HTTP/1.0 has no such rule
    assert old.startswith(b"HTTP/1.0 200 OK\r\n"), old[:200]


def test_an_unknown_transfer_coding_is_501_not_implemented(live: srv.Server) -> None:
    answer = _raw(
        live, b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), answer[:200]


def _malformed_lines(server: srv.Server) -> int:
    log = server.log.read_text(errors="replace")
    return log.count("Invalid request from") + log.count("malformed request from")


def test_a_flood_of_malformed_requests_does_not_flood_the_log(live: srv.Server) -> None:
    before = _malformed_lines(live)
    for i in range(50):
        answer = _raw(live, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header %d\r\n\r\n" % i)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    # At most the first of them per worker: the rest are counted, said once per interval.
    assert _malformed_lines(live) - before <= live.workers


def _connection(server: srv.Server, via: str) -> http.client.HTTPConnection:
    if via == "tcp":
        assert server.port is not None
        return http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE)
    return UnixHTTPConnection(server.sock(via), timeout=PATIENCE)


@pytest.mark.parametrize("via", ["tcp", "rest.sock"])
def test_a_refused_body_is_drained_by_time_not_by_size(live: srv.Server, via: str) -> None:
    """http.client writes the whole body before it reads; the service drained refused bodies
    up to max(4 x the limit, 64 MiB), so one just over that ended in a broken pipe."""
    body = b" " * (65 * 1024 * 1024)
    conn = _connection(live, via)
    try:
        conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert response.status == 413, response.read()[:300]
        response.read()
        conn.request("GET", "/health")  # the next request (on a new connection: that one closed)
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("via", ["tcp", "rest.sock"])
def test_a_chunked_body_over_the_limit_is_refused_with_connection_close(
    live: srv.Server, via: str
) -> None:
    """Its 413 said `Connection: keep-alive` and the connection then closed, the rest of the
    body unread: a client that took the answer at its word lost its next request there."""
    piece = b" " * (1 << 20)
    conn = _connection(live, via)
    try:
        conn.request(
            "POST",
            "/v1/embeddings",
            body=iter([piece] * 17),  # over the default 16 MiB, sent whole before reading
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413, response.read()[:300]
        assert response.getheader("Connection") == "close"
        response.read()
    finally:
        conn.close()


def test_connections_made_just_after_sigterm_are_answered_or_refused(
    tmp_path: Path, built_root: Path
) -> None:
    """A kept-alive connection keeps the stopping worker for a moment; the connections the
    kernel queued for it meanwhile were reset when it closed its listeners."""
    server = srv.start(
        tmp_path, built_root, workers=1, extra_env={"EMBEDDER_MODELS": "paraphrase-minilm-l3-v2"}
    )
    kept: list[socket.socket] = []
    try:
        server.wait_ready(180)
        assert server.port is not None
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        kept.append(idle)
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        server.proc.send_signal(signal.SIGTERM)
        outcomes = []
        for _ in range(8):
            try:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
            except ConnectionRefusedError:
                outcomes.append("refused")
                continue
            kept.append(s)
            try:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = s.recv(65536)
                outcomes.append("answered" if answer.startswith(b"HTTP/1.1 200 ") else "closed")
            except ConnectionResetError:
                outcomes.append("reset")
        assert set(outcomes) <= {"answered", "refused"}, outcomes
        assert server.proc.wait(PATIENCE) == 0
    finally:
        for s in kept:
            s.close()
        server.stop()
