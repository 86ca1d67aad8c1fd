"""Writing to an accepted connection never waits for the peer: what the kernel does not take
at once is kept, in order, for the poller to send."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from embedder.server.http.wire import Wire

WAIT = 60.0  # a bound for what must happen; never waited out when all is well


@pytest.fixture()
def pair() -> Iterator[tuple[Wire, socket.socket]]:
    a, b = socket.socketpair()
    wire = Wire.adopt(a)
    yield wire, b
    wire.close()
    b.close()


def _in_a_thread(*writes: bytes | bytearray, wire: Wire) -> None:
    """`wire.sendall` each of `writes`; fail if that does not return (it waited on the
    peer)."""
    done = threading.Event()

    def run() -> None:
        for data in writes:
            wire.sendall(data)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(WAIT), "the write waited for the peer"


def test_a_small_answer_goes_out_at_once(pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    wire.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert not wire.pending and wire.flush()
    assert peer.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_a_peer_that_does_not_read_keeps_nobody_waiting(pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: far over any socket buffer
    tail = bytearray(b"and the rest")
    _in_a_thread(data, tail, wire=wire)
    tail[:] = b"overwritten!"  # the caller's buffer may change once sendall returns
    assert wire.pending and not wire.flush()
    assert not wire.try_send(b"HTTP/1.1 100 Continue\r\n\r\n"), "would jump the queue"
    got = bytearray()
    peer.settimeout(WAIT)
    while len(got) < len(data) + len(tail):
        got += peer.recv(1 << 20)
        wire.flush()
    assert got == data + b"and the rest" and not wire.pending


def test_a_peer_that_reset_is_reported_by_flush(pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    wire.sendall(b"x" * (16 << 20))
    peer.close()
    with pytest.raises(OSError):
        wire.flush()


def test_the_over_limit_mark_starts_clear(pair: tuple[Wire, socket.socket]) -> None:
    wire, _ = pair
    assert wire.over_limit is False and isinstance(wire, socket.socket)


def test_what_is_held_goes_out_in_one_send_on_release(pair: tuple[Wire, socket.socket]) -> None:
    """The worker holds an answer's writes (gunicorn's header block, then its body) and
    sends them as one piece once the answer is made."""
    wire, peer = pair
    wire.hold()
    wire.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    wire.sendall(bytearray(b"{}"))
    with pytest.raises(BlockingIOError):
        peer.recv(100, socket.MSG_DONTWAIT)  # nothing sent while held
    assert not wire.pending
    wire.release()
    assert not wire.pending and wire.held is None
    assert peer.recv(100) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    wire.sendall(b"next")  # no longer held
    assert peer.recv(100) == b"next"


def test_a_large_held_body_is_sent_as_written_not_copied(
    pair: tuple[Wire, socket.socket],
) -> None:
    wire, peer = pair
    head, body = b"HTTP/1.1 200 OK\r\n\r\n", bytes(range(256)) * (16 * 1024)  # 4 MiB
    wire.hold()
    wire.sendall(head)
    wire.sendall(body)
    wire.release()
    assert wire.held is None
    kept = list(wire.rest)
    assert kept and kept[-1].obj is body  # what the kernel did not take is the body itself
    got = bytearray()
    peer.settimeout(WAIT)
    while len(got) < len(head) + len(body):
        got += peer.recv(1 << 20)
        wire.flush()
    assert got == head + body and not wire.pending


def test_what_is_held_on_a_socket_closed_meanwhile_is_dropped(
    pair: tuple[Wire, socket.socket],
) -> None:
    wire, _ = pair
    wire.hold()
    wire.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    wire.close()
    wire.release()  # no error: the write would have failed on a closed socket
    assert wire.held is None
