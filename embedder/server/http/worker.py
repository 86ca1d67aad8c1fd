"""The gunicorn worker: gthread, except that no client keeps an HTTP thread from work. A
connection gets a thread only once its whole request has arrived, the thread's answer goes out
as far as the client takes it at once, and each listener has its own threads and its own
connection cap.

gthread hands every accepted connection to its thread pool, where the request is read and the
answer written with blocking calls: as many clients as threads, sending their headers a byte a
second, not reading their answer, or announcing a body and not sending it, held every thread,
and nothing else was served for as long as they wished. Here:

- the poller reads each request whole, whatever its framing, under the header and body
  timeouts (embedder.server.http.reading), and hands it to a thread from the pool of the
  listener it came in on: what TCP clients do cannot take the threads the unix sockets need.
  The thread parses only those bytes; it has no socket to read from;
- the answer is written without waiting (embedder.server.http.wire); what the client does not
  take at once the poller sends as it reads, under EMBEDDER_BODY_TIMEOUT, and a close is a
  lingering close in the poller, which also drains a body left unread (embedder.server.http.
  outbox);
- a listener with EMBEDDER_MAX_CONNECTIONS open stops accepting (the kernel backlog holds the
  rest) until one closes;
- a stopping worker still takes, for a moment, the connections the kernel queued for it, and
  closes its listeners only once nothing is open or queued: closing them resets what they
  hold.

After an answer on a kept-alive connection the thread waits for the next request, for as long
as its pool needs no thread and the keep-alive lasts, and serves it when it arrives whole
(embedder.server.http.pool, embedder.server.http.linger); anything else goes back to the
poller. Keep-alive, max_requests, graceful shutdown and reloads are
gthread's own. Malformed requests are answered with the status that names the fault, in the
service's error shape, and logged at most once per interval.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import time
from concurrent import futures
from typing import Any

from gunicorn import http
from gunicorn.http import errors as parse
from gunicorn.http2 import negotiation
from gunicorn.workers import gthread

from embedder.server.http.access import Throttled
from embedder.server.http.linger import Closed, Idle, next_request
from embedder.server.http.outbox import Outbox, refusal, targets_rpc
from embedder.server.http.pool import Pools
from embedder.server.http.reading import Handover, Reader
from embedder.server.http.wire import Wire
from embedder.server.listeners import RPC, ListenerRules
from embedder.settings import Settings

CLOSE_LINGER = 2.0  # s a closing connection is drained for (gunicorn's own bound)
STOP_ACCEPT = 2.0  # s a stopping worker still takes connections queued for it


class MissingHost(parse.ParseException):  # type: ignore[misc]
    def __str__(self) -> str:
        return "an HTTP/1.1 request must have a Host header"


# The answer to each malformed request gunicorn's parser tells apart; any other is a 400.
_MALFORMED: tuple[tuple[type[Exception], str, str], ...] = (
    (parse.UnsupportedTransferCoding, "501 Not Implemented", "not_implemented"),
    (parse.LimitRequestLine, "414 URI Too Long", "uri_too_long"),
    (parse.LimitRequestHeaders, "431 Request Header Fields Too Large", "headers_too_large"),
    (parse.ExpectationFailed, "417 Expectation Failed", "expectation_failed"),
    (parse.ForbiddenProxyRequest, "403 Forbidden", "forbidden"),
    (parse.ConfigurationProblem, "500 Internal Server Error", "internal_error"),
)


class Conn(gthread.TConn):  # type: ignore[misc]
    """A connection that knows its listener and reports its closing once."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, listener: int) -> None:
        super().__init__(cfg, sock, client, server)
        self.listener = listener
        self.ready = False  # its request is in the buffer: the next step is a thread
        self.body_left = False  # its request's body was not read: close after the answer
        self.on_close: Any = None

    def close(self, graceful: bool = False) -> None:
        """Closed at once: a lingering close is the worker's, in its poller."""
        try:
            super().close(False)
        finally:
            if self.on_close is not None:
                callback, self.on_close = self.on_close, None
                callback(self)


def _finished(result: Any) -> futures.Future[Any]:
    done: futures.Future[Any] = futures.Future()
    done.set_result(result)
    return done


class GuardedWorker(gthread.ThreadWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.header_timeout = float(settings.header_timeout)
        self.body_timeout = float(settings.body_timeout)
        self.max_body = settings.max_body_bytes
        self.per_listener = settings.max_connections
        self.rules = ListenerRules(settings.socket_dir, settings.tcp_expose)
        self.listeners = {id(s): s for s in self.sockets}
        self.open: dict[int, int] = dict.fromkeys(self.listeners, 0)
        self.listening: set[int] = set()
        self.worker_connections = self.per_listener * max(1, len(self.listeners))
        self.max_keepalived = self.worker_connections - self.cfg.threads
        self._beat = float("-inf")  # when the last heartbeat went to the master
        self.stop_accepting: float | None = None  # set once the worker stops
        self.outbox: Outbox
        self.reader: Reader
        self.malformed = Throttled(self.log.error_log, "malformed requests")

    def run(self) -> None:
        self.outbox = Outbox(self.poller, self._after_answer, self._close)
        timeouts = (self.header_timeout, self.body_timeout)
        self.reader = Reader(
            self.poller, timeouts, self.max_body, self._ready, self._refuse, self._close
        )
        super().run()

    def get_thread_pool(self) -> Any:
        return Pools(self.cfg.threads)

    def notify(self) -> None:
        """The heartbeat the master checks against `timeout` (a utime of the worker's temp
        file): gthread sends it on every poller wake, two or three per request; once a second
        (or a quarter of the timeout, if shorter) tells the master as much."""
        now = time.monotonic()
        if now - self._beat >= min(1.0, self.timeout / 4):
            self._beat = now
            super().notify()

    # --- in the HTTP thread ---------------------------------------------------------------

    def handle(self, conn: Conn) -> Any:
        """gthread's, then the connection's next requests in this same thread, each as it
        comes whole while the pool needs no thread (`embedder.server.http.pool`) and the last
        answer is all out. A connection idle for its whole keep-alive is closed, as gthread's
        poller would; one handed back earlier starts its keep-alive there (so the poller's
        queue of kept-alive connections stays in the order of their deadlines)."""
        result = super().handle(conn)
        while (
            result is True
            and self.alive
            and isinstance(conn.sock, Wire)  # not TLS
            and not conn.sock.pending
            and not conn.is_http2
        ):
            with self.tpool.of(conn.listener).waiting() as wanted:
                if wanted is None:
                    break
                try:
                    unreader = conn.parser.unreader
                    if not next_request(
                        conn.sock, unreader, self.cfg.keepalive, self.max_body, wanted
                    ):
                        break
                except (Closed, Idle):
                    return False
            conn.sock.whole = True
            result = super().handle(conn)
        return result

    def handle_request(self, req: Any, conn: Conn) -> Any:
        """gthread's, the answer's header block and body sent together, once it is made."""
        if conn.body_left:
            req.must_close = True  # the rest of the connection is that body: drained, closed
        if req.version == (1, 1) and not any(name == "HOST" for name, _ in req.headers):
            raise MissingHost()  # RFC 9112 section 3.2
        sock = conn.sock
        if not isinstance(sock, Wire):  # TLS
            return super().handle_request(req, conn)
        sock.hold()
        try:
            return super().handle_request(req, conn)
        finally:
            sock.release()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        """A malformed request: answered with the status that names the fault, in the
        service's error shape, and logged at most once per interval. Anything else (a fault
        of the app) is gthread's: logged with its traceback, 500."""
        if not isinstance(exc, parse.ParseException) or isinstance(
            exc, (parse.InvalidResponseHeader, parse.InvalidResponseHeaderName)
        ):
            super().handle_error(req, client, addr, exc)
            return
        status, code = next(
            ((s, c) for cls, s, c in _MALFORMED if isinstance(exc, cls)),
            ("400 Bad Request", "bad_request"),
        )
        peer = addr[0] if isinstance(addr, tuple) and addr else "a unix socket"
        self.malformed.warning("malformed request from %s: %s %s", peer, status[:3], exc)
        with contextlib.suppress(OSError):
            client.sendall(refusal(status, code, str(exc)))

    def is_parent_alive(self) -> bool:
        """A worker whose master is gone stops as on SIGTERM: the connections its threads
        waited on come back to the poller, and those kept alive close within gthread's short
        stopping linger, not their whole keep-alive."""
        if super().is_parent_alive():
            return True
        self.alive = False
        return False

    # --- accepting, per listener ----------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        if self.stop_accepting is not None:
            return  # stopping: murder_pending closes the listeners when the moment is over
        if not enabled and not self.alive:
            # The worker is stopping. A connection the kernel has queued for it would be
            # reset when its listeners close: take those first (murder_pending goes on).
            self.stop_accepting = time.monotonic() + STOP_ACCEPT
            self.tpool.release()  # kept-alive connections back to the poller, which caps them
            self.outbox.cap_closes(time.monotonic() + CLOSE_LINGER)  # as gthread caps those
            self._take_queued()
            return
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
        self._accept_one(listener)

    def _accept_one(self, listener: Any) -> bool:
        """Take one queued connection; False when none is left."""
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return e.errno == errno.ECONNABORTED  # that one left already: the next may not
        key = id(listener)
        self.nr_conns += 1
        self.open[key] += 1
        self._listen(key)
        conn = Conn(self.cfg, Wire.adopt(sock), client, listener.getsockname(), key)
        conn.on_close = self._closed
        self.enqueue_req(conn)
        return True

    def _take_queued(self) -> None:
        for key, listener in self.listeners.items():
            while self.open[key] < self.per_listener and self._accept_one(listener):
                pass

    def _closed(self, conn: Conn) -> None:
        self.open[conn.listener] -= 1
        self._listen(conn.listener)
        self.reader.forget(conn)

    def _close(self, conn: Conn) -> None:
        self.nr_conns -= 1
        conn.close()

    # --- reading requests in the poller (embedder.server.http.reading) --------------------

    def enqueue_req(self, conn: Conn) -> None:
        if (
            conn.ready
            or self.cfg.is_ssl
            or negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        ):
            # Read whole by the poller (`_ready`), or else (TLS, HTTP/2) by the thread itself.
            conn.sock.whole = conn.ready
            conn.ready = False
            super().enqueue_req(conn)
            return
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        self.reader.start(conn, held)

    def on_client_socket_readable(self, conn: Conn, client: Any) -> None:
        """A kept-alive connection's next request is arriving: read it here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.enqueue_req(conn)

    def _ready(self, conn: Conn, buf: bytearray, handover: Handover) -> None:
        """To a thread, with what the poller read: the thread's parser reads those bytes and
        nothing else (it has no socket), so it never waits on the client."""
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, (), conn.client)
        conn.parser.unreader.unread(bytes(buf[: handover.upto]))
        conn.body_left = handover.body_left
        conn.sock.over_limit = handover.over_limit
        conn.data_ready = conn.ready = True
        self.enqueue_req(conn)

    def _refuse(self, conn: Conn, buf: bytearray, status: str, code: str, message: str) -> None:
        """The poller's own refusal of a request (`buf`, what came of it): the answer, then
        a lingering close."""
        rpc = targets_rpc(buf) and RPC in self.rules.of(conn.server).surfaces
        try:
            conn.sock.sendall(refusal(status, code, message, rpc))
        except OSError:
            self._close(conn)
            return
        self._answered(conn, False)

    # --- after the answer -----------------------------------------------------------------

    def finish_request(self, conn: Conn, fs: futures.Future[Any]) -> None:
        """In the poller once a thread is done with `conn`: the rest of its answer, then
        keep-alive (gthread's) or a lingering close."""
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:
            result = False
        if result is True or result is False:
            self._answered(conn, result)
        else:
            super().finish_request(conn, fs)  # gthread's deferral: not a request yet

    def _answered(self, conn: Conn, keep: bool) -> None:
        if conn.sock.fileno() < 0:  # closed in the thread (gthread does, on a failed answer)
            self._close(conn)
        elif getattr(conn.sock, "pending", False):
            self.outbox.send_rest(conn, keep, self.body_timeout)
        else:
            self._after_answer(conn, keep)

    def _after_answer(self, conn: Conn, keep: bool) -> None:
        if keep:
            super().finish_request(conn, _finished(True))
        else:
            drain = conn.body_left and self.alive  # a stopping worker lingers briefly
            self.outbox.close(conn, self.body_timeout if drain else CLOSE_LINGER)

    # --- deadlines, on every poller wake --------------------------------------------------

    def murder_pending(self) -> None:
        """Also cut requests, answers and closes past their deadlines; and, while stopping,
        take what is queued."""
        super().murder_pending()
        self.reader.expire()
        self.outbox.expire()
        self.malformed.flush()
        if self.stop_accepting is not None and self._accepting:
            if time.monotonic() >= self.stop_accepting:
                self._accepting = False
                for key in self.listeners:
                    self._listen(key)
            elif self.nr_conns == 0:
                self._take_queued()  # the last look before the listeners close
