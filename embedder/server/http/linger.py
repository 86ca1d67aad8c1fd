"""A kept-alive connection's next request, read by the thread that answered the last one.

gthread hands a kept-alive connection back to its poller after every response: the thread
wakes the poller through a pipe, the poller registers the socket again, sees the next request
arrive, reads it and wakes a thread. Here the answering thread waits for the next request
instead (no CPU: poll(2)), for as long as its pool does not want it back
(embedder.server.http.pool) and the connection's keep-alive lasts, and serves it itself once it
is wholly in. Anything else (the pool wants the thread, the request's bytes do not all follow
its first at once, a body that is chunked, behind `Expect: 100-continue` or over the limit)
goes back to the poller with the bytes read so far, which then reads it as any other.
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


class Idle(Exception):
    """Nothing came for the whole wait: the connection's keep-alive is over."""


ARRIVAL = 0.002  # s: once a request's first bytes are in, the rest must be in within this


def next_request(
    sock: socket.socket,
    unreader: Any,
    seconds: float,
    max_body: int,
    wanted: int | None = None,
    arrival: float = ARRIVAL,
) -> bool:
    """Wait up to `seconds`, and only while the file descriptor `wanted` stays unreadable, for
    the next request on `sock`, and take it if it is wholly in within `arrival` of its first
    bytes with at most `max_body` bytes of body: True once it is in `unreader` (ahead of what
    it held). False hands the connection back (what came so far is in `unreader` too); Closed
    when the client hung up first, Idle when nothing came for `seconds`."""
    if seconds <= 0 or unreader.buf.getvalue():
        return False  # read ahead already: gthread's own path takes it
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if wanted is not None:
        poller.register(wanted, select.POLLIN)
    deadline = time.monotonic() + seconds
    buf = bytearray()
    try:
        while (left := deadline - time.monotonic()) > 0:
            events = poller.poll(left * 1000)
            if not events:
                if not buf:
                    raise Idle
                break
            if not buf and any(fd == wanted for fd, _ in events):
                break
            try:
                data = sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                raise Closed
            if not buf:  # the request is arriving: the rest follows at once or goes back
                deadline = min(deadline, time.monotonic() + arrival)
                if wanted is not None:
                    poller.unregister(wanted)
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
