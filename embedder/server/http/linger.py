"""A kept-alive connection's next request, read by the thread that answered the last one.

gthread hands a kept-alive connection back to its poller after every response: the thread
wakes the poller through a pipe, the poller registers the socket again, sees the next request
arrive, reads it and wakes a thread. On a client that sends its next request at once (a
loop of lone queries, an indexing script) that round trip is on the critical path of every
request. Here the answering thread waits a bounded moment for the next request instead (no
CPU: poll(2)), and serves it itself once it is wholly in. Anything else (nothing came, half a
request, a body the poller would not buffer) goes back to the poller with the bytes read so
far, which then guards it as any other (header and body timeouts, 408).
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

MAX_HEADER_BLOCK = 64 * 1024  # a header block beyond this is refused (431)
RECV_BYTES = 256 * 1024


def header_end(buf: bytes | bytearray) -> int:
    """Where the header block ends (just after its blank line), or -1."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


def announced_length(head: bytes | bytearray) -> int | None:
    """The body's Content-Length (0 without one); None for a body that must be read as a
    stream (chunked, behind `Expect: 100-continue`) or a length that is not one number."""
    length: int | None = None
    for line in bytes(head).split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            continue
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
    return length or 0


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
