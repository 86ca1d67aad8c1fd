"""Work for clients that have gone is dropped (issue 15): RPC batches whose sockets were
closed right after sending used to run every text while /health waited behind them."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.integration import server as srv

pytestmark = pytest.mark.integration

MODEL = "paraphrase-minilm-l3-v2"
CLIENTS, CALLS, TEXTS = 6, 20, 32  # 3,840 texts in all


def _batch(client: int) -> bytes:
    calls = [
        {
            "jsonrpc": "2.0",
            "method": "embed",
            "params": {"texts": [f"text {client} {k} {i}" for i in range(TEXTS)], "model": MODEL},
            "id": k,
        }
        for k in range(CALLS)
    ]
    return json.dumps(calls).encode()


def _texts_run(server: srv.Server) -> int:
    status = server.rpc("status")["result"]
    (model,) = [m for m in status["models"] if m["id"] == MODEL]
    return int(model["batching"]["texts"])


def test_batches_of_clients_that_hung_up_stop(tmp_path: Path, built_root: Path) -> None:
    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={"EMBEDDER_MODELS": MODEL, "EMBEDDER_ACCESS_LOG_JSON": "1"},
    )
    try:
        server.wait_ready(180)
        before = _texts_run(server)
        for c in range(CLIENTS):
            body = _batch(c)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(server.sock("rpc.sock")))
                s.sendall(
                    b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
        # Each batch is over once its access-log line is written (bounded wait).
        deadline = time.monotonic() + 600
        while server.log.read_text().count('"route":"/rpc"') < CLIENTS + 1:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
        ran = _texts_run(server) - before
        assert ran < CLIENTS * CALLS * TEXTS // 4, ran
    finally:
        server.stop()
