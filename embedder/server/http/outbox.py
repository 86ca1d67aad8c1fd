"""The poller's side of an answer: sending what the client has not taken yet, and closing
a connection without cutting off what it is still sending.

Both used to happen in a blocking call: the rest of an answer in the HTTP thread
(`sendall`), the close in the poller itself (gunicorn lingers up to 2 s in `recv` so that an
unread request byte does not turn the close into a reset). Here each is a poller
registration with a deadline:

- the rest of an answer goes out as the client reads it; a client that has not taken the
  whole answer by the deadline is cut off;
- a close first ends the sending side, then reads and throws away what the client still
  sends until it closes too or the linger runs out (nginx's lingering close). A body the
  service refused without reading (over the size limit) is drained this way, for up to the
  body timeout, so a client that writes its whole body before reading the answer (Python's
  `http.client`) gets the answer rather than a broken pipe, whatever the body's size.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from embedder.server.http.errors import rpc_code
from embedder.server.http.framing import RECV_BYTES

_READS_PER_WAKE = 16  # a drain reads at most this many buffers per wake, then lets others in


def _abort(sock: socket.socket) -> None:
    """Have the close reset the connection: what the kernel still holds for a client that
    did not take it is dropped at once, not kept until the client gives up."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def refusal(status: str, code: str, message: str, rpc: bool = False) -> bytes:
    """A whole answer (closing the connection) for the refusals the worker makes without the
    app: in the service's error shape, or as a JSON-RPC error object for a request to
    JSON-RPC (`rpc`), as the app answers there."""
    if rpc:
        error = {"code": rpc_code(int(status[:3])), "message": message, "data": {"code": code}}
        body = orjson.dumps({"jsonrpc": "2.0", "error": error, "id": None})
    else:
        kind = "invalid_request_error" if int(status[:3]) < 500 else "server_error"
        body = orjson.dumps(
            {"error": {"message": message, "type": kind, "param": None, "code": code}}
        )
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def targets_rpc(buf: bytes | bytearray) -> bool:
    """Whether a request line, once whole, names /rpc as the router reads it (a query and
    one trailing slash aside; origin or absolute form)."""
    end = buf.find(b"\n")
    parts = bytes(buf[:end]).split() if end >= 0 else []
    if len(parts) != 3:
        return False
    target = parts[1].split(b"?", 1)[0]
    if b"://" in target:
        target = b"/" + target.split(b"://", 1)[1].partition(b"/")[2]
    return target in (b"/rpc", b"/rpc/")


class Outbox:
    """Connections whose answer is still going out, and connections closing. `done(conn,
    keep)` is called once an answer is all out; `closed(conn)` closes a connection for good
    (its owner's bookkeeping goes with it)."""

    def __init__(
        self,
        poller: selectors.BaseSelector,
        done: Callable[[Any, bool], None],
        closed: Callable[[Any], None],
    ) -> None:
        self.poller = poller
        self.done = done
        self.closed = closed
        self.sending: dict[int, tuple[Any, bool, float]] = {}
        self.closing: dict[int, tuple[Any, float]] = {}
        self._sink = bytearray(RECV_BYTES)

    def __len__(self) -> int:
        return len(self.sending) + len(self.closing)

    # --- the rest of an answer ------------------------------------------------------------

    def send_rest(self, conn: Any, keep: bool, seconds: float) -> None:
        """Send what `conn.sock` kept as the client reads it, within `seconds`; then
        `done(conn, keep)`."""
        self.sending[id(conn)] = (conn, keep, time.monotonic() + seconds)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._writable, conn))

    def _writable(self, conn: Any, _sock: Any) -> None:
        try:
            if not conn.sock.flush():
                return
        except OSError:  # the client reset the connection
            self._stop_sending(conn)
            self._close_now(conn)
            return
        _, keep, _ = self._stop_sending(conn)
        self.done(conn, keep)

    def _stop_sending(self, conn: Any) -> tuple[Any, bool, float]:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        return self.sending.pop(id(conn))

    # --- closing --------------------------------------------------------------------------

    def close(self, conn: Any, seconds: float) -> None:
        """End the sending side now (after what was sent), and close once the client has
        closed its side too, or after `seconds`, reading and discarding what it sends."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_now(conn)
            return
        self.closing[id(conn)] = (conn, time.monotonic() + seconds)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))

    def _drain(self, conn: Any, _sock: Any) -> None:
        for _ in range(_READS_PER_WAKE):
            try:
                if conn.sock.recv_into(self._sink, RECV_BYTES, socket.MSG_DONTWAIT):
                    continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._stop_closing(conn)  # the client closed (or reset): so do we
            self._close_now(conn)
            return

    def _stop_closing(self, conn: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.closing.pop(id(conn), None)

    def _close_now(self, conn: Any) -> None:
        self.closed(conn)

    def cap_closes(self, deadline: float) -> None:
        """Closes still draining end by `deadline` (time.monotonic) at the latest: a stopping
        worker's answers are out, and a client that sits on a connection it has its answer on
        must not hold the worker's exit for the body timeout."""
        for key, (conn, was) in list(self.closing.items()):
            self.closing[key] = (conn, min(was, deadline))

    # --- deadlines ------------------------------------------------------------------------

    def expire(self) -> None:
        """Cut off answers not taken and closes not finished by their deadline."""
        if not self.sending and not self.closing:
            return
        now = time.monotonic()
        for conn, _, deadline in list(self.sending.values()):
            if deadline <= now:
                self._stop_sending(conn)
                _abort(conn.sock)
                self._close_now(conn)
        for conn, deadline in list(self.closing.values()):
            if deadline <= now:
                self._stop_closing(conn)
                self._close_now(conn)
