"""The answering thread takes a kept-alive connection's next request only when it arrives whole
at once, and while its pool does not want it back; anything else goes back to the poller with
every byte read so far."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from gunicorn.http.unreader import SocketUnreader

from embedder.server.http.framing import header_end
from embedder.server.http.linger import Closed, Idle, announced_length, next_request

WAIT = 60.0  # a bound for what must happen; the tests never wait it out when all is well
NONE = 0.05  # a linger that must pass with nothing arriving

REQUEST = b'POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"input":1}'


@pytest.fixture()
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def _held(unreader: SocketUnreader) -> bytes:
    return bytes(unreader.buf.getvalue())


def test_a_whole_request_is_taken_in_this_thread(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    unreader = SocketUnreader(server)
    client.sendall(REQUEST)
    assert next_request(server, unreader, WAIT, 1024)
    assert _held(unreader) == REQUEST


def test_a_request_in_pieces_is_taken_once_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    unreader = SocketUnreader(server)
    got: list[bool] = []
    waiting = threading.Thread(
        target=lambda: got.append(next_request(server, unreader, WAIT, 1024, arrival=WAIT))
    )
    waiting.start()
    for piece in (REQUEST[:20], REQUEST[20:70], REQUEST[70:]):
        client.sendall(piece)
    waiting.join(WAIT)
    assert got == [True] and _held(unreader) == REQUEST


def test_nothing_for_the_whole_wait_ends_the_keep_alive(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = pair
    unreader = SocketUnreader(server)
    with pytest.raises(Idle):
        next_request(server, unreader, NONE, 1024)
    assert _held(unreader) == b""


@pytest.mark.parametrize(
    "sent",
    [
        REQUEST[:30],  # half a header block: the poller guards the rest (header timeout)
        REQUEST[:-3],  # a body not all there
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,  # over max_body
        b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (70 * 1024),  # a header block too large
    ],
)
def test_anything_else_goes_back_with_every_byte_read(
    pair: tuple[socket.socket, socket.socket], sent: bytes
) -> None:
    server, client = pair
    unreader = SocketUnreader(server)
    client.sendall(sent)
    assert not next_request(server, unreader, NONE, 1024)
    rest = b""
    server.setblocking(False)
    try:
        while chunk := server.recv(1 << 20):
            rest += chunk
    except BlockingIOError:
        pass
    assert _held(unreader) + rest == sent, "no byte may be lost on the way back"


def test_a_request_whose_rest_does_not_follow_at_once_goes_back(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """However long the thread may wait for a request, once its first bytes are in the rest
    must follow within `arrival`: a trickling client is the poller's to guard."""
    server, client = pair
    unreader = SocketUnreader(server)
    client.sendall(REQUEST[:20])
    assert not next_request(server, unreader, WAIT, 1024, arrival=NONE)
    assert _held(unreader) == REQUEST[:20]


def test_the_pool_wanting_its_thread_back_hands_the_connection_back(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A thread waits on an idle connection only while `wanted` stays unreadable: once it is
    readable the connection goes back (whatever waits in its socket stays there)."""
    server, client = pair
    wanted, want = os.pipe()
    try:
        unreader = SocketUnreader(server)
        got: list[bool] = []
        waiting = threading.Thread(
            target=lambda: got.append(next_request(server, unreader, WAIT, 1024, wanted))
        )
        waiting.start()
        os.write(want, b"!")
        waiting.join(WAIT)
        assert got == [False] and _held(unreader) == b""
        client.sendall(REQUEST)  # a request already in when the pool wants the thread
        assert not next_request(server, unreader, WAIT, 1024, wanted)
        assert _held(unreader) == b"" and server.recv(1024, socket.MSG_PEEK) == REQUEST[:1024]
    finally:
        os.close(wanted)
        os.close(want)


def test_a_client_that_hangs_up_is_told(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.close()
    with pytest.raises(Closed):
        next_request(server, SocketUnreader(server), WAIT, 1024)


def test_bytes_already_read_ahead_or_no_linger_take_gthreads_own_path(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    unreader = SocketUnreader(server)
    unreader.unread(b"GET / HT")
    client.sendall(REQUEST)
    assert not next_request(server, unreader, WAIT, 1024)
    assert _held(unreader) == b"GET / HT"
    assert not next_request(server, SocketUnreader(server), 0.0, 1024)


def test_header_parsing() -> None:
    assert header_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody") == 24
    assert header_end(b"GET / HTTP/1.1\nA: b\n\nbody") == 21
    assert header_end(b"GET / HTTP/1.1\r\nA: b\r\n") == -1
    assert announced_length(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n") == 12
    assert announced_length(b"GET / HTTP/1.1\r\nHost: x\r\n") == 0
    assert announced_length(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2") is None
    assert announced_length(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n") is None
    assert announced_length(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n") is None
