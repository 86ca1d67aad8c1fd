"""HTTP at its edges, against a real gunicorn (issue 23 item 5, the HTTP parts).

| case                                              | what must hold                          |
|---------------------------------------------------|-----------------------------------------|
| HEAD on a GET route                               | the GET answer's head, no body (was 405)|
"""

from __future__ import annotations

import socket

import pytest

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
