"""Clients that stall on their socket take no HTTP thread (issue 23 item 2): whatever they
do (not read their answer, not send the body they announced, behind `Expect: 100-continue` or
over the size limit, or more large bodies at once than the worker holds), a prompt client on
the same listener gets `/health` and a one-text embed at once.

Against the default worker class, 1 worker with 2 HTTP threads per listener; each attack uses
more connections than that, all on loopback, bounded, closed at the end. The checks
synchronise on what the server shows (its access log, its sockets' queues in /proc/net/tcp),
never on how fast the machine is; the one bound on time states the behaviour: answered while
the stalled clients hold, where before the fix the answer never came while they held.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from tests.integration import server as srv
from tests.polling import PATIENCE, wait_until

pytestmark = pytest.mark.integration

THREADS = 2  # HTTP threads per listener
MODEL = "paraphrase-minilm-l3-v2"
PROMPT = 10.0  # s: a prompt client is answered within this while the others stall
STOPPED = 60.0  # s: a stopping worker is gone within this while answered clients hold
HELLO = json.dumps({"input": "hello", "model": MODEL}).encode()


def _serve(tmp_path: Path, root: Path, **env: str) -> srv.Server:
    server = srv.start(
        tmp_path,
        root,
        workers=1,
        extra_env={
            "EMBEDDER_HTTP_THREADS": str(THREADS),
            "EMBEDDER_MODELS": MODEL,
            "EMBEDDER_ACCESS_LOG_JSON": "1",
            **env,
        },
    )
    server.wait_ready(180)
    return server


@pytest.fixture()
def stalled() -> Iterator[list[socket.socket]]:
    """The stalling clients' sockets, closed whatever happens."""
    socks: list[socket.socket] = []
    yield socks
    _leave(socks)


def _leave(socks: list[socket.socket]) -> None:
    """The stalling clients go (the fixture closes them again, harmlessly)."""
    for s in socks:
        s.close()


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connecting, so the window the server sees is small from the start
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(PATIENCE)
    s.connect(("127.0.0.1", port))
    return s


def _post(path: str, body: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n"
        % (path.encode(), extra, len(body) if length is None else length)
    )


def _prompt(server: srv.Server) -> None:
    """`/health` and a one-text embed on TCP and rest.sock, each 200 within PROMPT s."""
    for via in ("tcp", "rest.sock"):
        for method, path, body in (("GET", "/health", None), ("POST", "/v1/embeddings", HELLO)):
            if via == "tcp":
                assert server.port is not None
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PROMPT)
            else:
                conn = UnixHTTPConnection(server.sock(via), timeout=PROMPT)
            t0 = time.monotonic()
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except TimeoutError:
                raise AssertionError(f"{method} {path} on {via}: no answer in {PROMPT} s") from None
            finally:
                conn.close()
            took = time.monotonic() - t0
            assert response.status == 200 and took < PROMPT, (via, path, response.status, took)


def _length(head: bytes) -> int:
    return int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])


def _read_answer(s: socket.socket) -> bytes:
    """The next whole answer on `s` (head and a body of its Content-Length), or what came
    before the server closed."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].lower()
            length = (
                int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                if b"content-length:" in head
                else 0
            )
            if head.startswith(b"http/1.1 100 ") or len(buf) >= end + 4 + length:
                return buf
        chunk = s.recv(1 << 20)
        if not chunk:
            return buf
        buf += chunk


def _tcp_queues(port: int) -> dict[int, tuple[str, int, int]]:
    """The server's side of each connection to `port` from loopback, by the client's port:
    (state, bytes queued to send, bytes received not yet read by the server)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state != "0A":
            tx, rx = (int(q, 16) for q in queues.split(":"))
            out[int(remote.split(":")[1], 16)] = (state, tx, rx)
    return out


def _read_by_server(port: int, socks: list[socket.socket]) -> Callable[[], bool]:
    """True once the server has read every byte these clients sent."""

    def check() -> bool:
        queues = _tcp_queues(port)
        return all((q := queues.get(s.getsockname()[1])) is not None and q[2] == 0 for s in socks)

    return check


def _answers_made(server: srv.Server, texts: int) -> int:
    return server.log.read_text().count(f'"texts":{texts},"tokens"')


def _made(server: srv.Server, answers: int) -> bool:
    return _answers_made(server, LARGE) >= answers


LARGE = 2048  # texts in a request whose float answer (~9 MB) is far over what a socket buffers


def test_clients_that_never_read_their_answer_hold_no_thread(
    tmp_path: Path, built_root: Path, stalled: list[socket.socket]
) -> None:
    """Each sends one large request and never reads: the thread that made the answer used to
    block in sendall for as long as the client held (all of them: TCP stopped answering)."""
    server = _serve(tmp_path, built_root, EMBEDDER_BODY_TIMEOUT="600")
    try:
        assert server.port is not None
        body = json.dumps({"input": ["a"] * LARGE, "model": MODEL, "encoding_format": "float"})
        for i in range(2 * THREADS):
            s = _connect(server.port, rcvbuf=4096)
            s.sendall(_post("/v1/embeddings", body.encode()) + body.encode())
            stalled.append(s)
            # One at a time, so each is computed (not refused as too much queued work).
            wait_until(f"answer {i + 1} made", partial(_made, server, i + 1))
        queues = _tcp_queues(server.port)
        assert all(queues[s.getsockname()[1]][1] > 0 for s in stalled), "answers all sent?"
        _prompt(server)
    finally:
        _leave(stalled)  # answers in flight: a stop would wait for them (graceful timeout)
        server.stop()


def test_an_answer_not_taken_in_time_is_cut_off(
    tmp_path: Path, built_root: Path, stalled: list[socket.socket]
) -> None:
    """The rest of an answer waits in the poller under the body timeout, not for ever."""
    server = _serve(tmp_path, built_root, EMBEDDER_BODY_TIMEOUT="2")
    try:
        assert server.port is not None
        body = json.dumps({"input": ["a"] * LARGE, "model": MODEL, "encoding_format": "float"})
        s = _connect(server.port, rcvbuf=4096)
        stalled.append(s)
        s.sendall(_post("/v1/embeddings", body.encode()) + body.encode())
        wait_until("the answer made", lambda: _answers_made(server, LARGE) == 1)
        port = s.getsockname()[1]
        wait_until("the server cut it off", lambda: port not in _tcp_queues(server.port or 0))
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                got += chunk
        head, _, rest = got.partition(b"\r\n\r\n")
        if rest:
            assert len(rest) < _length(head), "the whole answer arrived: it was not cut off"
        _prompt(server)
    finally:
        server.stop()


def test_bodies_behind_100_continue_are_read_by_the_poller(
    tmp_path: Path, built_root: Path, stalled: list[socket.socket]
) -> None:
    """Each announces a body with `Expect: 100-continue` and does not send it: each got its
    `100 Continue` from a thread, which then waited for the body (16 held TCP)."""
    server = _serve(tmp_path, built_root, EMBEDDER_BODY_TIMEOUT="600")
    try:
        assert server.port is not None
        for _ in range(2 * THREADS + 1):
            s = _connect(server.port)
            s.sendall(_post("/v1/embeddings", HELLO, b"Expect: 100-continue\r\n"))
            stalled.append(s)
        for s in stalled:
            assert _read_answer(s) == b"HTTP/1.1 100 Continue\r\n\r\n"
        _prompt(server)
        for s in stalled:  # each sends its body at last, and is served
            s.sendall(HELLO)
            assert _read_answer(s).startswith(b"HTTP/1.1 200 "), "not served"
    finally:
        server.stop()


def test_bodies_over_the_limit_are_refused_unread(
    tmp_path: Path, built_root: Path, stalled: list[socket.socket]
) -> None:
    """A body announced over EMBEDDER_MAX_BODY_BYTES and never sent: the thread used to read
    (drain) it before the 413, waiting for as long as the body timeout. Once the worker
    stops, the connections it answered are closed within a short linger: they held its exit
    for the body timeout (or the graceful timeout, whichever came first)."""
    server = _serve(
        tmp_path,
        built_root,
        EMBEDDER_BODY_TIMEOUT="600",
        EMBEDDER_MAX_BODY_BYTES="4096",
        EMBEDDER_GRACEFUL_TIMEOUT="600",
    )
    try:
        assert server.port is not None
        for expect in (b"", b"Expect: 100-continue\r\n") * (THREADS + 1):
            s = _connect(server.port)
            s.sendall(_post("/v1/embeddings", b"", expect, length=100_000))
            stalled.append(s)
        for s in stalled:
            assert _read_answer(s).startswith(b"HTTP/1.1 413 "), "no 413 before the body"
        _prompt(server)
        server.proc.send_signal(signal.SIGTERM)  # the clients still hold their connections
        stopping = time.monotonic()
        assert server.proc.wait(PATIENCE) == 0
        # The drains end within 2 s of the stop: far inside this bound, which is itself a
        # tenth of the timeouts that held the worker before.
        assert time.monotonic() - stopping < STOPPED
    finally:
        server.stop()


def test_large_bodies_beyond_the_budget_wait_in_the_poller(
    tmp_path: Path, built_root: Path, stalled: list[socket.socket]
) -> None:
    """The poller holds at most 4 x EMBEDDER_MAX_BODY_BYTES of large bodies at once; the
    bodies beyond that were read by threads, so a few clients announcing large bodies and
    holding them back took every thread. Now they wait for room, then are read."""
    limit = 1 << 20
    server = _serve(
        tmp_path, built_root, EMBEDDER_BODY_TIMEOUT="600", EMBEDDER_MAX_BODY_BYTES=str(limit)
    )
    try:
        assert server.port is not None
        body = HELLO + b" " * (limit - len(HELLO))  # a valid request of the largest size
        taken = []
        for _ in range(4):  # these fill the budget: their bodies are being read
            s = _connect(server.port)
            s.sendall(_post("/v1/embeddings", body) + body[:10])
            taken.append(s)
        waiting = []
        for _ in range(THREADS + 1):  # these must wait for room: no thread may read them
            s = _connect(server.port)
            s.sendall(_post("/v1/embeddings", body, b"Expect: 100-continue\r\n"))
            waiting.append(s)
        stalled.extend(taken + waiting)
        wait_until("every byte sent read", _read_by_server(server.port, taken + waiting))
        _prompt(server)
        taken[0].sendall(body[10:])  # one body arrives whole: room for a waiting one
        assert _read_answer(taken[0]).startswith(b"HTTP/1.1 200 ")
        ready, _, _ = select.select(waiting, [], [], PATIENCE)
        assert ready, "no waiting body was asked for once there was room"
        assert _read_answer(ready[0]) == b"HTTP/1.1 100 Continue\r\n\r\n"
        ready[0].sendall(body)
        assert _read_answer(ready[0]).startswith(b"HTTP/1.1 200 ")
    finally:
        _leave(stalled)  # requests in flight: a stop would wait for them (graceful timeout)
        server.stop()
