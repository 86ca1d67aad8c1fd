"""HTTP/1.1 client pieces for the load generator: loopback TCP or a unix socket only.

The client is a lean one on purpose. http.client parses every answer's headers with the
email package, at many times this client's CPU per request (docs/performance.md, "Lone
requests"), and the load generator reported that time as the server's latency. This one
writes the request in one send and reads the status line, Content-Length, Retry-After and
Connection: all the service sends (it never answers these requests chunked).
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

_TOKENS = b'"total_tokens":'
RPC_TOKENS = b'"tokens":'  # the JSON-RPC embed result's token count
_RECV = 256 * 1024
_MAX_HEAD = 64 * 1024


class Connection:
    """One keep-alive connection, opened on the first request and again after `close`."""

    def __init__(self, family: int, address: Any, host: str, timeout: float) -> None:
        self.family, self.address, self.host, self.timeout = family, address, host, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _open(self) -> socket.socket:
        s = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            if self.family != socket.AF_UNIX:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(self.address)
        except OSError:
            s.close()
            raise
        return s

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        """(status, body, Retry-After seconds or 1) of one POST of a JSON body."""
        if self.sock is None:
            self.sock = self._open()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        return self._answer(self.sock)

    def _more(self, sock: socket.socket) -> None:
        chunk = sock.recv(_RECV)
        if not chunk:
            raise http.client.RemoteDisconnected("the server closed the connection")
        self.buf += chunk

    def _answer(self, sock: socket.socket) -> tuple[int, bytes, float]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise http.client.HTTPException("the answer's header block is too large")
            self._more(sock)
        lines = self.buf[:end].split(b"\r\n")
        first = lines[0].split(b" ", 2)
        if len(first) < 2 or not first[0].startswith(b"HTTP/1.") or not first[1].isdigit():
            raise http.client.BadStatusLine(repr(lines[0][:100]))
        length, retry, close = 0, 1.0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit():
                    raise http.client.HTTPException(f"a bad Content-Length: {value!r}")
                length = int(value)
            elif name == b"retry-after":
                try:
                    retry = float(value)
                except ValueError:
                    retry = 1.0
            elif name == b"connection":
                close = value.lower() == b"close"
            elif name == b"transfer-encoding":
                raise http.client.HTTPException("a chunked answer (the service sends none)")
        need = end + 4 + length
        while len(self.buf) < need:
            self._more(sock)
        data, self.buf = self.buf[end + 4 : need], self.buf[need:]
        if close:
            self.close()
        return int(first[1]), data, retry


def connect(target: str, timeout: float) -> Connection:
    """`tcp:HOST:PORT` (loopback only) or `unix:/path/rest.sock`; opened on first use."""
    kind, _, rest = target.partition(":")
    if kind == "unix":
        return Connection(socket.AF_UNIX, rest, "localhost", timeout)
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise ValueError(f"target must be tcp:<loopback>:<port> or unix:<path>, not {target!r}")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Connection(family, (host, int(port)), f"{host}:{port}", timeout)


def total_tokens(body: bytes, key: bytes = _TOKENS) -> int:
    """usage.total_tokens (or the RPC result's `key`) without decoding the whole answer
    (vectors are most of it)."""
    at = body.rfind(key)
    if at < 0:
        return 0
    digits = bytearray()
    for ch in body[at + len(key) :]:
        if 48 <= ch <= 57:
            digits.append(ch)
        elif digits or ch != 32:
            break
    return int(digits or b"0")


def post_json(
    conn: Connection, body: bytes, path: str = "/v1/embeddings"
) -> tuple[int, bytes, float]:
    return conn.post(path, body)
