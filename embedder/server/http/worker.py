"""The gunicorn worker: gthread, except that a connection gets a thread only once its request
has arrived, and each listener has its own threads and its own connection cap.

gthread hands every accepted connection to its thread pool, where the request is read with
blocking calls. Measured against the stock worker (1 worker x 16 threads): 16 TCP connections
sending their headers a byte a second held all 16 threads, and `/health` on rest.sock got no
answer for as long as they kept it up; 50 slow bodies kept it out for ~60 s. Here the poller
reads each request into a buffer without blocking (the header block within
EMBEDDER_HEADER_TIMEOUT, a body of announced length within EMBEDDER_BODY_TIMEOUT; late ones
get 408) and only a complete request reaches a thread, from the pool of the listener it came
in on: what TCP clients do cannot take the threads the unix sockets need. A listener with
EMBEDDER_MAX_CONNECTIONS open stops accepting (the kernel backlog holds the rest) until one
closes. Chunked bodies, bodies behind `Expect: 100-continue` and bodies beyond the buffer
budget are read in the thread as before (bounded by the body watchdog, embedder.server.http.body).
After an answer on a kept-alive connection the thread waits EMBEDDER_KEEPALIVE_LINGER_MS for
the next request and serves it when it arrives whole (embedder.server.http.linger); anything
else goes back to the poller. Keep-alive, max_requests, graceful shutdown and reloads are
gthread's own.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import time
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.http2 import negotiation
from gunicorn.workers import gthread

from embedder.server.http.errors import rpc_code
from embedder.server.http.linger import (
    MAX_HEADER_BLOCK,
    RECV_BYTES,
    Closed,
    announced_length,
    header_end,
    next_request,
)
from embedder.server.listeners import RPC, ListenerRules
from embedder.settings import Settings


def _response(status: str, code: str, message: str, rpc: bool = False) -> bytes:
    """A refusal from the poller: OpenAI's error shape, or a JSON-RPC error object for a
    request to JSON-RPC (as the app answers there)."""
    if rpc:
        error = {"code": rpc_code(int(status[:3])), "message": message, "data": {"code": code}}
        body = json.dumps({"jsonrpc": "2.0", "error": error, "id": None}).encode()
    else:
        body = (
            b'{"error": {"message": "%s", "type": "invalid_request_error", "param": null, '
            b'"code": "%s"}}' % (message.encode(), code.encode())
        )
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _targets_rpc(buf: bytes | bytearray) -> bool:
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


class Conn(gthread.TConn):  # type: ignore[misc]
    """A connection that knows its listener and reports its closing once."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, listener: int) -> None:
        super().__init__(cfg, sock, client, server)
        self.listener = listener
        self.ready = False  # its request is in the buffer: the next step is a thread
        self.on_close: Any = None

    def close(self, graceful: bool = False) -> None:
        try:
            super().close(graceful)
        finally:
            if self.on_close is not None:
                callback, self.on_close = self.on_close, None
                callback(self)


class _Gathering:
    """A request being read by the poller."""

    def __init__(self, conn: Conn, buf: bytes, deadline: float) -> None:
        self.conn = conn
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.need: int | None = None  # bytes in all (headers + body) once the headers are in
        self.registered = False


class _Pools:
    """A thread pool per listener, made when the listener first needs a thread."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.pools: dict[int, futures.ThreadPoolExecutor] = {}

    def submit(self, fn: Any, conn: Conn) -> futures.Future[Any]:
        pool = self.pools.get(conn.listener)
        if pool is None:
            pool = futures.ThreadPoolExecutor(self.threads, f"http-{len(self.pools)}")
            self.pools[conn.listener] = pool
        return pool.submit(fn, conn)

    def shutdown(self, wait: bool = True) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=wait)


class GuardedWorker(gthread.ThreadWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.header_timeout = float(settings.header_timeout)
        self.body_timeout = float(settings.body_timeout)
        self.max_body = settings.max_body_bytes
        self.per_listener = settings.max_connections
        self.rules = ListenerRules(settings.socket_dir, settings.tcp_expose)
        # Bodies the poller holds at once (announced lengths); beyond it a thread reads them.
        self.budget = 4 * settings.max_body_bytes
        self.committed = 0
        self.listeners = {id(s): s for s in self.sockets}
        self.open: dict[int, int] = dict.fromkeys(self.listeners, 0)
        self.listening: set[int] = set()
        self.gathering: dict[int, _Gathering] = {}
        self.worker_connections = self.per_listener * max(1, len(self.listeners))
        self.max_keepalived = self.worker_connections - self.cfg.threads
        self._beat = float("-inf")  # when the last heartbeat went to the master
        self.linger = settings.keepalive_linger_ms / 1000.0

    def handle(self, conn: Conn) -> Any:
        """gthread's, then the connection's next request in this same thread while it comes
        within the linger (`embedder.server.http.linger`)."""
        result = super().handle(conn)
        while result is True and self.alive and not conn.is_http2 and not self.cfg.is_ssl:
            try:
                if not next_request(conn.sock, conn.parser.unreader, self.linger, self.max_body):
                    break
            except Closed:
                return False
            result = super().handle(conn)
        return result

    def get_thread_pool(self) -> Any:
        return _Pools(self.cfg.threads)

    def notify(self) -> None:
        """The heartbeat the master checks against `timeout` (a utime of the worker's temp
        file): gthread sends it on every poller wake, two or three per request; once a second
        (or a quarter of the timeout, if shorter) tells the master as much."""
        now = time.monotonic()
        if now - self._beat >= min(1.0, self.timeout / 4):
            self._beat = now
            super().notify()

    # --- accepting, per listener ----------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        self._accepting = enabled
        for key in self.listeners:
            self._listen(key)

    def _listen(self, key: int) -> None:
        on = self._accepting and self.open[key] < self.per_listener
        if on == (key in self.listening):
            return
        listener = self.listeners[key]
        if on:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, self.accept)
            self.listening.add(key)
        else:
            self.poller.unregister(listener)
            self.listening.discard(key)

    def accept(self, listener: Any) -> None:
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        key = id(listener)
        self.nr_conns += 1
        self.open[key] += 1
        self._listen(key)
        conn = Conn(self.cfg, sock, client, listener.getsockname(), key)
        conn.on_close = self._closed
        self.enqueue_req(conn)

    def _closed(self, conn: Conn) -> None:
        self.open[conn.listener] -= 1
        self._listen(conn.listener)
        self._forget(conn)

    # --- reading requests in the poller ---------------------------------------------------

    def enqueue_req(self, conn: Conn) -> None:
        if (
            conn.ready
            or self.cfg.is_ssl
            or negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        ):
            conn.ready = False
            super().enqueue_req(conn)
            return
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        g = _Gathering(conn, held, time.monotonic() + self.header_timeout)
        self.gathering[id(conn)] = g
        conn.sock.setblocking(False)
        if held and self._advance(g):
            return
        self._readable(g, conn.sock)
        if id(conn) in self.gathering and not g.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, g))
            g.registered = True

    def on_client_socket_readable(self, conn: Conn, client: Any) -> None:
        """A kept-alive connection's next request is arriving: read it here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.enqueue_req(conn)

    def _readable(self, g: _Gathering, sock: Any) -> None:
        try:
            data = g.conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(g)  # the client went away before its request was complete
            return
        g.buf += data
        self._advance(g)

    def _advance(self, g: _Gathering) -> bool:
        """Hand the connection to a thread once what it needs is in; True when it has gone
        (to a thread, or refused)."""
        if g.need is None:
            end = header_end(g.buf)
            if end < 0:
                if len(g.buf) > MAX_HEADER_BLOCK:
                    self._refuse(g, "431 Request Header Fields Too Large", "headers_too_large")
                    return True
                return False
            body = self._body_to_buffer(bytes(g.buf[:end]))
            g.need = end + body
            self.committed += body
            if body:
                g.deadline = time.monotonic() + self.body_timeout
        if len(g.buf) < g.need:
            return False
        self._forget(g.conn)
        conn = g.conn
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(g.buf))
        conn.data_ready = conn.ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)
        return True

    def _body_to_buffer(self, head: bytes) -> int:
        """Bytes of body the poller reads before handing over: a Content-Length body within
        the limits; 0 for anything else (a thread reads it, or gunicorn refuses the headers)."""
        length = announced_length(head)
        if not length or length > self.max_body or self.committed + length > self.budget:
            return 0
        return length

    def _forget(self, conn: Conn) -> None:
        g = self.gathering.pop(id(conn), None)
        if g is None:
            return
        if g.need is not None:
            self.committed -= g.need - header_end(g.buf)
        if g.registered:
            g.registered = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _drop(self, g: _Gathering) -> None:
        self._forget(g.conn)
        self.nr_conns -= 1
        g.conn.close()

    def _refuse(self, g: _Gathering, status: str, code: str) -> None:
        message = {
            "headers_too_large": f"the request headers are over {MAX_HEADER_BLOCK} bytes",
            "request_timeout": (
                f"the request headers did not arrive within {self.header_timeout:g} s"
                if g.need is None
                else f"the request body did not arrive within {self.body_timeout:g} s"
            ),
        }[code]
        rpc = _targets_rpc(g.buf) and RPC in self.rules.of(g.conn.server).surfaces
        with contextlib.suppress(OSError):
            g.conn.sock.send(_response(status, code, message, rpc))
        self._drop(g)

    def murder_pending(self) -> None:
        """Also cut requests that have not arrived by their deadline: 408 once any of it
        came, a silent close for a connection that never said anything."""
        super().murder_pending()
        now = time.monotonic()
        for g in [g for g in self.gathering.values() if g.deadline <= now]:
            if g.buf.strip():
                self._refuse(g, "408 Request Timeout", "request_timeout")
            else:
                self._drop(g)
