"""Slow clients cannot take a worker away from everyone else: a body that trickles in is cut
off at EMBEDDER_BODY_TIMEOUT, freeing the HTTP thread it held."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.integration import server as srv
from tests.polling import PATIENCE

pytestmark = pytest.mark.integration


def _trickle(
    port: int, stop: threading.Event, outcome: list[str], started: threading.Semaphore
) -> None:
    """Headers at once, then the body one byte every 0.3 s (bounded: at most 60 bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60\r\n\r\n"
        )
        try:
            for i in range(60):
                if stop.is_set():
                    break
                s.sendall(b" ")
                if i == 1:
                    started.release()  # headers and two body bytes are out: a body in progress
                time.sleep(0.3)  # the attack's pace, not a synchronisation
            outcome.append("sent all")
        except OSError:
            outcome.append("cut off")


def test_trickling_bodies_are_cut_off_and_others_are_served(
    tmp_path: Path, built_root: Path
) -> None:
    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={
            "EMBEDDER_HTTP_THREADS": "2",
            "EMBEDDER_BODY_TIMEOUT": "2",
            "EMBEDDER_MODELS": "paraphrase-minilm-l3-v2",
        },
    )
    stop = threading.Event()
    outcome: list[str] = []
    try:
        server.wait_ready(120)
        assert server.port is not None
        started = threading.Semaphore(0)
        slow = [
            threading.Thread(target=_trickle, args=(server.port, stop, outcome, started))
            for _ in range(3)
        ]
        for t in slow:
            t.start()
        for _ in slow:  # every trickling body is under way (more than the 2 HTTP threads)
            assert started.acquire(timeout=PATIENCE), outcome
        status, _, _ = server.request(
            "tcp", "POST", "/v1/embeddings", {"input": "hello", "model": "paraphrase-minilm-l3-v2"}
        )
        assert status == 200
        # Served before any trickling body could have completed (60 x 0.3 s): not behind them.
        assert "sent all" not in outcome, outcome
        for t in slow:
            t.join(30)
        assert outcome.count("cut off") == 3, outcome
    finally:
        stop.set()
        server.stop()
