"""Slow and idle TCP clients cannot starve the service (issue 15): requests are read by the
worker's poller, a thread per listener serves only complete requests, a header block or body
that does not arrive in time gets 408, and each listener has its own connection cap.

Every attack is bounded (a few connections, each at most ~60 s) and on loopback. The checks
synchronise on observable state (bytes sent, responses read, the kernel's accept queue),
never on how fast the machine is.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration import server as srv

pytestmark = pytest.mark.integration

THREADS = 2  # HTTP threads per listener: the attacks use twice as many connections
MODEL = "paraphrase-minilm-l3-v2"


class Trickler(threading.Thread):
    """One TCP connection that sends `head` at once, then one byte of `drip` every 0.2 s
    (at most 300 bytes: ~60 s) until stopped; records what the server answered."""

    def __init__(self, port: int, head: bytes, drip: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.drip, self.stop = port, head, drip, stop
        self.sent = 0
        self.answer = b""
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=90) as s:
                s.sendall(self.head)
                for byte in self.drip[:300]:
                    if self.stop.is_set() or select.select([s], [], [], 0)[0]:
                        break  # stopped, or the server has answered (or closed)
                    s.sendall(bytes([byte]))
                    self.sent += 1
                    time.sleep(0.2)  # the attack's pace, not a synchronisation
                s.settimeout(0.2 if self.stop.is_set() else 90)
                with contextlib.suppress(OSError):
                    self.answer = s.recv(4096)
        except OSError:
            pass
        finally:
            self.finished.set()


Attack = tuple[threading.Event, list["Trickler"]]


@pytest.fixture()
def attack() -> Iterator[tuple[threading.Event, list[Trickler]]]:
    stop = threading.Event()
    started: list[Trickler] = []
    yield stop, started
    stop.set()
    for t in started:
        t.join(100)


def _start(n: int, port: int, head: bytes, drip: bytes, attack: Attack) -> list[Trickler]:
    stop, started = attack
    ts = [Trickler(port, head, drip, stop) for _ in range(n)]
    for t in ts:
        t.start()
    started.extend(ts)
    _until(lambda: all(t.sent >= 3 for t in ts), "the slow clients are sending")
    return ts


def _until(check: Callable[[], object], what: str, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def _serve(tmp_path: Path, root: Path, **env: str) -> srv.Server:
    server = srv.start(
        tmp_path,
        root,
        workers=1,
        extra_env={"EMBEDDER_HTTP_THREADS": str(THREADS), "EMBEDDER_MODELS": MODEL, **env},
    )
    server.wait_ready(180)
    return server


HEADERS_FOREVER = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "
CHUNKED_300 = b"Transfer-Encoding: chunked\r\n\r\n12c\r\n"  # then a chunk of 300 bytes


def test_trickling_headers_on_tcp_starve_neither_unix_nor_tcp(
    tmp_path: Path, built_root: Path, attack: Attack
) -> None:
    server = _serve(tmp_path, built_root, EMBEDDER_HEADER_TIMEOUT="120")
    try:
        assert server.port is not None
        slow = _start(2 * THREADS, server.port, HEADERS_FOREVER, b"a" * 300, attack)
        status, _, _ = server.request("rest.sock", "GET", "/health")
        assert status == 200
        status, _, _ = server.request("tcp", "GET", "/health")
        assert status == 200
        # Both answered while every slow client was still sending: not after them.
        assert not any(t.finished.is_set() for t in slow)
    finally:
        attack[0].set()
        server.stop()


@pytest.mark.parametrize("framing", [b"Content-Length: 300\r\n\r\n", CHUNKED_300])
def test_slow_bodies_on_tcp_starve_neither_unix_nor_tcp(
    tmp_path: Path, built_root: Path, attack: Attack, framing: bytes
) -> None:
    """Sized bodies, and chunked ones (issue 23: those were read by a thread)."""
    server = _serve(tmp_path, built_root, EMBEDDER_BODY_TIMEOUT="120")
    try:
        assert server.port is not None
        head = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + framing
        )
        slow = _start(2 * THREADS, server.port, head, b" " * 300, attack)
        for via in ("rest.sock", "tcp"):
            status, _, _ = server.request(
                via, "POST", "/v1/embeddings", {"input": "hello", "model": MODEL}
            )
            assert status == 200, via
        assert not any(t.finished.is_set() for t in slow)
    finally:
        attack[0].set()
        server.stop()


def test_a_header_block_that_does_not_arrive_in_time_gets_408(
    tmp_path: Path, built_root: Path, attack: Attack
) -> None:
    server = _serve(tmp_path, built_root, EMBEDDER_HEADER_TIMEOUT="1")
    try:
        assert server.port is not None
        (slow,) = _start(1, server.port, HEADERS_FOREVER, b"a" * 300, attack)
        _until(slow.finished.is_set, "the server cut the slow client off", 90)
        assert slow.answer.startswith(b"HTTP/1.1 408"), slow.answer[:100]
        assert slow.sent < 300
        # A prompt client on the same listener is served as usual, kept alive included.
        _prompt_client(server.port, 3)
    finally:
        attack[0].set()
        server.stop()


def test_after_a_kept_alive_answer_the_next_request_is_still_guarded(
    tmp_path: Path, built_root: Path
) -> None:
    """The answering thread waits a moment for a kept-alive connection's next request
    (the worker's LINGER); one that trickles in goes back to the poller, which cuts it
    off with 408 as on a fresh connection, while the threads serve everyone else. Requests
    sent back to back, or two in one write, are all answered on the same connection."""
    server = _serve(tmp_path, built_root, EMBEDDER_HEADER_TIMEOUT="1")
    slow: list[socket.socket] = []
    try:
        assert server.port is not None
        for _ in range(2 * THREADS):  # more than the listener's threads
            s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(s).startswith(b"HTTP/1.1 200")
            s.sendall(HEADERS_FOREVER)  # and never the rest
            slow.append(s)
        _prompt_client(server.port, 5)
        for s in slow:
            assert _answer(s).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            both = _answer(s)
            if both.count(b"HTTP/1.1 200") < 2:
                both += _answer(s)
            assert both.count(b"HTTP/1.1 200") == 2, both
    finally:
        for s in slow:
            s.close()
        server.stop()


def _prompt_client(port: int, requests: int) -> None:
    """`requests` health checks on one kept-alive connection, each answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(requests):
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
    finally:
        conn.close()


def _answer(s: socket.socket) -> bytes:
    """The server's next whole answer: its head and a body of its Content-Length (bounded)."""
    buf = b""
    deadline = time.monotonic() + 60
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].lower()
            length = (
                int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                if (b"content-length:" in head)
                else 0
            )
            if len(buf) >= end + 4 + length:
                return buf
        ready, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no whole answer within 60 s: {buf[:200]!r}"
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def _accept_queue(port: int) -> int:
    """Connections the kernel holds for the listener on `port`, not yet accepted."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"no listener on port {port}")


def test_connections_are_capped_per_listener(tmp_path: Path, built_root: Path) -> None:
    server = _serve(
        tmp_path, built_root, EMBEDDER_MAX_CONNECTIONS="3", EMBEDDER_HEADER_TIMEOUT="120"
    )
    idle: list[socket.socket] = []
    try:
        assert server.port is not None
        for _ in range(6):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=60))
        # Three are taken; the other three wait in the kernel's queue, not in the worker.
        _until(lambda: _accept_queue(server.port or 0) == 3, "3 connections left queued")
        status, _, _ = server.request("rest.sock", "GET", "/health")
        assert status == 200
        idle.pop(0).close()  # one slot frees: one queued connection is taken
        _until(lambda: _accept_queue(server.port or 0) == 2, "one more accepted")
    finally:
        for s in idle:
            s.close()
        server.stop()
