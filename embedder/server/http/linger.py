"""A kept-alive connection's next request, read by the thread that answered the last one.

gthread hands a kept-alive connection back to its poller after every response: the thread
wakes the poller through a pipe, the poller registers the socket again, sees the next request
arrive, reads it and wakes a thread. On a client that sends its next request at once (a
loop of lone queries, an indexing script) that round trip is on the critical path of every
request. Here the answering thread waits a bounded moment for the next request instead (no
CPU: poll(2)), and serves it itself once it is wholly in. Anything else (nothing came, half a
request, a body that is chunked, behind `Expect: 100-continue` or over the limit) goes back to
the poller with the bytes read so far, which then reads it as any other.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from embedder.server.http.framing import MAX_HEADER_BLOCK, RECV_BYTES, Body, header_end, read_head


def announced_length(head: bytes | bytearray) -> int | None:
    """The body's Content-Length (0 without one); None for a body that must be read as a
    stream (chunked, behind `Expect: 100-continue`) or a framing gunicorn refuses."""
    framing = read_head(head)
    if framing.expects_continue or framing.body not in (Body.NONE, Body.LENGTH):
        return None
    return framing.length


class Closed(Exception):
    """The client closed the connection while the thread waited for its next request."""


def next_request(sock: socket.socket, unreader: Any, seconds: float, max_body: int) -> bool:
    """Wait up to `seconds` for a whole request of at most `max_body` bytes of body on `sock`;
    True once it is in `unreader` (ahead of what it held). False hands the connection back
    (what came so far is in `unreader` too); Closed when the client hung up first."""
    if seconds <= 0 or unreader.buf.getvalue():
        return False  # read ahead already: gthread's own path takes it
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    deadline = time.monotonic() + seconds
    buf = bytearray()
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(left * 1000):
                break
            try:
                data = sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                raise Closed
            buf += data
            end = header_end(buf)
            if end < 0:
                if len(buf) > MAX_HEADER_BLOCK:
                    break
                continue
            body = announced_length(buf[:end])
            if body is None or body > max_body:
                break
            if len(buf) >= end + body:
                return True
        return False
    finally:
        if buf:
            unreader.unread(bytes(buf))
