"""The body watchdog belongs to its app: its thread starts with the first deadline, ends with
`close()`, and survives a socket it cannot shut."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import falcon.testing
import orjson
import pytest

from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.deadline import Watchdog, WatchdogClosed
from embedder.server.http.wire import Wire
from embedder.service import Service
from tests.http.conftest import on


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(60)  # a bound on a broken watchdog, not an expectation
    yield a, b
    a.close()
    b.close()


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "body-deadline"]


def test_a_passed_deadline_ends_the_blocked_read(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    w = Watchdog()
    assert not w.running  # nothing armed yet: no thread
    try:
        token = w.arm(a, 0.0)
        assert a.recv(1) == b""  # the read side was shut: end of file
        assert not w.disarm(token)  # it had fired
        assert w.running
    finally:
        w.close()
    assert not w.running


def test_a_disarmed_deadline_does_not_fire(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    w = Watchdog()
    try:
        assert w.disarm(w.arm(a, 3600.0))
        b.sendall(b"x")
        assert a.recv(1) == b"x"
    finally:
        w.close()
    with pytest.raises(WatchdogClosed):
        w.arm(a, 1.0)


class Unshuttable:
    def shutdown(self, how: int) -> None:
        raise RuntimeError("not a socket")


def test_a_socket_it_cannot_shut_is_logged_and_later_deadlines_still_fire(
    pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = pair
    w = Watchdog()
    try:
        with caplog.at_level(logging.ERROR, logger="embedder.server.http"):
            w.arm(Unshuttable(), 0.0)
            w.arm(a, 0.0)
            assert a.recv(1) == b""
        assert w.running
        assert "could not shut" in caplog.text
    finally:
        w.close()


def test_each_app_reads_bodies_with_its_own_watchdog(
    starter_service: Service, listeners: dict[str, Any]
) -> None:
    """A body read from a real socket arms the app's watchdog, and no other."""
    before = set(watchdogs())
    mine, other = Watchdog(), Watchdog()
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), watchdog=mine))
    falcon.testing.TestClient(create_app(starter_service, HttpOptions(), watchdog=other))
    try:
        body = orjson.dumps({"input": "hi", "model": "all-minilm-l6-v2"})
        r = c.simulate_post(
            "/v1/embeddings",
            body=body,
            headers={"Content-Type": "application/json"},
            extras=on(listeners, "rest.sock"),
        )
        assert r.status_code == 200
        assert mine.running and not other.running
        assert len(set(watchdogs()) - before) == 1
    finally:
        mine.close()
        other.close()
    assert set(watchdogs()) <= before


def test_a_body_the_worker_read_whole_arms_no_deadline(
    starter_service: Service, listeners: dict[str, Any]
) -> None:
    """The worker's poller (or its linger) has the whole request in memory before a thread
    parses it and says so on the socket: nothing can keep the read waiting, so no deadline
    is armed and the watchdog's thread never starts."""
    wire = Wire.adopt(listeners["rest.sock"].dup())
    wire.whole = True
    mine = Watchdog()
    c = falcon.testing.TestClient(create_app(starter_service, HttpOptions(), watchdog=mine))
    body = orjson.dumps({"input": "hi", "model": "all-minilm-l6-v2"})

    def post() -> int:
        return c.simulate_post(
            "/v1/embeddings",
            body=body,
            headers={"Content-Type": "application/json"},
            extras={"gunicorn.socket": wire},
        ).status_code

    try:
        assert post() == 200
        assert not mine.running
        wire.whole = False  # a request its thread reads itself (TLS, HTTP/2) has its deadline
        assert post() == 200
        assert mine.running
    finally:
        mine.close()
        wire.close()
