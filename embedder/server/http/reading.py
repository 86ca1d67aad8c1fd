"""The worker's poller reading requests: each whole, without blocking, before a thread sees it.

A request is read into a buffer as its bytes arrive: the header block within the header
timeout, then its body, whatever its framing (embedder.server.http.framing), within the body
timeout; `Expect: 100-continue` is answered here when the body is wanted. Once it is all in,
the connection goes to `ready` with the bytes to hand over. A body that will not be read (over
the size limit, or a framing gunicorn refuses) goes with the header block alone, and the
connection closes after its answer.

Bodies held at once are bounded: one over SMALL_BODY reserves what it may take of a budget
before it is read, and waits for room when there is none (its deadline still runs), so a
flood of large bodies cannot fill the worker's memory, while small ones (every lone query)
never wait behind them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from embedder.server.http.framing import (
    MAX_HEADER_BLOCK,
    RECV_BYTES,
    Body,
    Chunks,
    Malformed,
    OverLimit,
    header_end,
    read_head,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SMALL_BODY = RECV_BYTES  # bodies up to this size are read without waiting for room


@dataclass(frozen=True)
class Handover:
    """What a thread gets: the first `upto` bytes read; with `body_left`, the body was not
    read (the connection closes after the answer); `over_limit`, because it is too large."""

    upto: int
    body_left: bool = False
    over_limit: bool = False


class _Gathering:
    """A request being read."""

    def __init__(self, conn: Any, buf: bytes, deadline: float) -> None:
        self.conn = conn
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.end = -1  # where the header block ends, once it is in
        self.need = 0  # bytes in all (headers + body) for a sized body
        self.chunks: Chunks | None = None  # for a chunked body
        self.size = 0  # bytes the body may take: what it reserves of the budget
        self.reserved = 0
        self.expects_continue = False
        self.registered = False
        self.waiting = False  # for room in the budget


class Reader:
    """Requests being read. `ready(conn, buf, handover)` takes a connection whose request is
    in; `refuse(conn, buf, status, code, message)` answers one that cannot be (and closes it;
    `buf` is what came of the request); `drop(conn)` closes one that went away or never said
    anything."""

    def __init__(
        self,
        poller: selectors.BaseSelector,
        timeouts: tuple[float, float],
        max_body: int,
        ready: Callable[[Any, bytearray, Handover], None],
        refuse: Callable[[Any, bytearray, str, str, str], None],
        drop: Callable[[Any], None],
    ) -> None:
        self.poller = poller
        self.header_timeout, self.body_timeout = timeouts
        self.max_body = max_body
        self.ready, self.refuse, self.drop = ready, refuse, drop
        self.budget = 4 * max_body
        self.reserved = 0
        self.waiting: deque[_Gathering] = deque()
        self.gathering: dict[int, _Gathering] = {}

    def start(self, conn: Any, held: bytes) -> None:
        """Read `conn`'s next request; `held` is what was read of it already."""
        g = _Gathering(conn, held, time.monotonic() + self.header_timeout)
        self.gathering[id(conn)] = g
        if (held and self._advance(g)) or g.waiting:
            return
        self._readable(g, conn.sock)
        if id(conn) in self.gathering and not g.waiting:
            self._watch(g)

    def forget(self, conn: Any) -> None:
        """`conn` is no longer read here (gone to a thread, refused, closed)."""
        g = self.gathering.pop(id(conn), None)
        if g is None:
            return
        self._unwatch(g)
        if g.waiting:
            g.waiting = False
            self.waiting.remove(g)
        if g.reserved:
            self.reserved -= g.reserved
            g.reserved = 0
            self._resume()

    def expire(self) -> None:
        """Requests not in by their deadline: 408 once any of it came, a silent close for a
        connection that never said anything."""
        now = time.monotonic()
        for g in [g for g in self.gathering.values() if g.deadline <= now]:
            self.forget(g.conn)
            if g.buf.strip():
                within = self.header_timeout if g.end < 0 else self.body_timeout
                what = "headers" if g.end < 0 else "body"
                message = f"the request {what} did not arrive within {within:g} s"
                self.refuse(g.conn, g.buf, "408 Request Timeout", "request_timeout", message)
            else:
                self.drop(g.conn)

    # --- reading --------------------------------------------------------------------------

    def _watch(self, g: _Gathering) -> None:
        if not g.registered:
            self.poller.register(g.conn.sock, selectors.EVENT_READ, partial(self._readable, g))
            g.registered = True

    def _unwatch(self, g: _Gathering) -> None:
        if g.registered:
            g.registered = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(g.conn.sock)

    def _readable(self, g: _Gathering, _sock: Any) -> None:
        try:
            data = g.conn.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.forget(g.conn)
            self.drop(g.conn)  # the client went away before its request was complete
            return
        g.buf += data
        self._advance(g)

    def _advance(self, g: _Gathering) -> bool:
        """Hand the connection over once what it needs is in; True when it has gone (to a
        thread, or refused)."""
        if g.end < 0:
            end = header_end(g.buf)
            if end < 0:
                if len(g.buf) > MAX_HEADER_BLOCK:
                    self.forget(g.conn)
                    message = f"the request headers are over {MAX_HEADER_BLOCK} bytes"
                    status = "431 Request Header Fields Too Large"
                    self.refuse(g.conn, g.buf, status, "headers_too_large", message)
                    return True
                return False
            self._framed(g, end)
            if id(g.conn) not in self.gathering:
                return True
        if g.waiting:
            return False
        if g.chunks is not None:
            try:
                if g.chunks.end(g.buf) is None:
                    if not self._reserve(g):
                        self._wait(g)
                    return False
            except OverLimit:
                return self._hand_over(g, Handover(g.end, body_left=True, over_limit=True))
            except Malformed:  # gunicorn's parser says what is wrong with it
                return self._hand_over(g, Handover(len(g.buf), body_left=True))
        elif len(g.buf) < g.need:
            return False
        return self._hand_over(g, Handover(len(g.buf)))

    def _framed(self, g: _Gathering, end: int) -> None:
        """The header block is in: how much body to read, and whether to answer `100
        Continue`. Bodies not to be read go with the header block alone."""
        head = read_head(g.buf[:end])
        if len(head.head) != end:  # without its Expect line: answered here
            g.buf[:end] = head.head
            end = len(head.head)
        g.end = g.need = end
        if head.body is Body.NONE:
            return
        if head.body is Body.UNKNOWN or head.length > self.max_body:
            self._hand_over(g, Handover(end, body_left=True))  # gunicorn refuses, or app: 413
            return
        if head.body is Body.LENGTH:
            g.need, g.size = end + head.length, head.length
        else:
            g.chunks = Chunks(end, self.max_body)
            g.size = Chunks.raw_limit(self.max_body)
        g.expects_continue = head.expects_continue
        g.deadline = time.monotonic() + self.body_timeout
        if not self._reserve(g):
            self._wait(g)
            return
        self._continue(g)

    def _hand_over(self, g: _Gathering, handover: Handover) -> bool:
        self.forget(g.conn)
        self.ready(g.conn, g.buf, handover)
        return True

    def _continue(self, g: _Gathering) -> None:
        """Ask for the body the client holds back for `100 Continue`."""
        if g.expects_continue and len(g.buf) == g.end and not g.conn.sock.try_send(CONTINUE):
            self.forget(g.conn)
            self.drop(g.conn)

    # --- room for large bodies ------------------------------------------------------------

    def _reserve(self, g: _Gathering) -> bool:
        """Room for `g`'s body, if it needs any: a sized body over SMALL_BODY reserves its
        length before it is read; a chunked one, what it may take once it is past SMALL_BODY
        (chunked bodies are mostly small and should not wait for that)."""
        sent = g.size if g.chunks is None else len(g.buf) - g.end
        if g.reserved or sent <= SMALL_BODY:
            return True
        if self.reserved and self.reserved + g.size > self.budget:
            return False
        self.reserved += g.size
        g.reserved = g.size
        return True

    def _wait(self, g: _Gathering) -> None:
        """Stop reading `g` until there is room (its body deadline still runs)."""
        g.waiting = True
        self._unwatch(g)
        self.waiting.append(g)

    def _resume(self) -> None:
        """Bodies that waited for room, in order, while there is room."""
        while self.waiting and self._reserve(self.waiting[0]):
            g = self.waiting.popleft()
            g.waiting = False
            self._continue(g)
            if id(g.conn) in self.gathering and not self._advance(g) and not g.waiting:
                self._watch(g)
