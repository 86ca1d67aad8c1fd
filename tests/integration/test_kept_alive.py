"""A thread waits on an idle kept-alive connection for its next request only while no one else
needs it (embedder.server.http.pool): with one HTTP thread, an idle client never keeps another
from being served, a stopping or orphaned worker lets go of idle connections at once, and
keep-alive still ends."""

from __future__ import annotations

import contextlib
import signal
import socket
from pathlib import Path

import psutil
import pytest

from tests.integration import server as srv
from tests.polling import PATIENCE

pytestmark = pytest.mark.integration

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def _serve(tmp_path: Path, built_root: Path, keepalive: int) -> srv.Server:
    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={
            "EMBEDDER_HTTP_THREADS": "1",
            "EMBEDDER_KEEPALIVE": str(keepalive),
            "EMBEDDER_GRACEFUL_TIMEOUT": str(keepalive),
            "EMBEDDER_MODELS": "paraphrase-minilm-l3-v2",
        },
    )
    server.wait_ready(180)
    return server


def _health(s: socket.socket) -> bytes:
    """The answer to a health check on `s`: its head and a body of its Content-Length."""
    s.sendall(HEALTH)
    answer = b""
    while True:
        end = answer.find(b"\r\n\r\n")
        if end >= 0:
            head = answer[:end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(answer) >= end + 4 + length:
                return answer
        chunk = s.recv(65536)
        if not chunk:
            return answer
        answer += chunk


def test_an_idle_client_never_keeps_the_only_thread_from_others(
    tmp_path: Path, built_root: Path
) -> None:
    """Keep-alive far beyond the test's patience: were the thread waiting on the idle
    connection not wanted back, the second client would wait for it to expire."""
    server = _serve(tmp_path, built_root, keepalive=600)
    try:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as idle:
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
            for _ in range(3):  # each on a new connection while the first stays idle
                with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as s:
                    assert _health(s).startswith(b"HTTP/1.1 200 ")
            status, _, _ = server.request(
                "rest.sock",
                "POST",
                "/v1/embeddings",
                {"input": "hi", "model": "paraphrase-minilm-l3-v2"},
            )
            assert status == 200
            # The idle connection went back to the poller and is still kept alive.
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()


def test_a_stopping_worker_lets_go_of_an_idle_connection(tmp_path: Path, built_root: Path) -> None:
    """The keep-alive and the graceful timeout are both beyond the test's patience: the
    master exits within it only if the thread waiting on the idle connection lets go."""
    server = _serve(tmp_path, built_root, keepalive=600)
    try:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as idle:
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(PATIENCE) == 0
            assert idle.recv(65536) == b"", "the idle connection is closed"
    finally:
        server.stop()


def test_keep_alive_still_ends(tmp_path: Path, built_root: Path) -> None:
    server = _serve(tmp_path, built_root, keepalive=1)
    try:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as idle:
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
            assert idle.recv(65536) == b"", "the server closes an idle connection"
    finally:
        server.stop()


def test_a_worker_whose_master_died_lets_go_of_an_idle_connection(
    tmp_path: Path, built_root: Path
) -> None:
    """The keep-alive and the graceful timeout are both beyond the test's patience: the
    orphaned worker exits within it only if the connection its thread waited on comes back
    with a stopping worker's short linger, not its whole keep-alive."""
    server = _serve(tmp_path, built_root, keepalive=600)
    (worker,) = psutil.Process(server.proc.pid).children()
    try:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as idle:
            assert _health(idle).startswith(b"HTTP/1.1 200 ")
            server.proc.kill()
            server.proc.wait(PATIENCE)
            worker.wait(PATIENCE)
            assert idle.recv(65536) == b"", "the idle connection is closed"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
        server.stop()
