"""`make run-bge` on a machine without the Hub, as a new user meets it: a live gunicorn on the
bge catalog with HF_HUB_OFFLINE and an empty models root and Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration import server as srv

pytestmark = pytest.mark.integration

BGE = ["bge-small-q1", "bge-small-q2", "bge-base-q3", "bge-base-q4", "bge-reranker-base"]


@pytest.fixture(scope="module")
def no_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[srv.Server]:
    tmp = tmp_path_factory.mktemp("no-hub")
    env = {"EMBEDDER_CATALOG": "bge", "HF_HUB_CACHE": str(tmp / "empty-hf-cache")}
    server = srv.start(tmp, tmp / "models", workers=1, tcp=False, extra_env=env)
    try:
        server.wait_sockets()
        yield server
    finally:
        server.stop()


def health_once_retrying(server: srv.Server, timeout: float = 120.0) -> dict[str, Any]:
    """/health once every model has failed and a retry is scheduled (observable: retry_in)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = server.json("rest.sock", "GET", "/health")[1]
        if "retry_in" in body or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_the_shared_cause_is_said_once(no_hub: srv.Server) -> None:
    health = health_once_retrying(no_hub)
    assert health["status"] == "error" and health["models_ready"] is False, health
    assert sorted(health["errors"]) == sorted(BGE)
    (cause,) = health["failures"].values()
    assert "HF_HUB_OFFLINE" in cause and "`make run`" in cause, cause
    assert "EMBEDDER_CATALOG=starter" in cause
    for model, text in health["errors"].items():
        assert cause not in text and text.endswith("failures.download)"), (model, text)
    assert (
        "bge-small-q1 is quantized to INT8 here from bge-small-q2's FP32 graph"
        in (health["errors"]["bge-small-q1"])
    )
    assert 0 <= health["retry_in"] <= 30
    log = no_hub.log.read_text(errors="replace")
    rounds = log.count("retrying 5 failed downloads")
    assert rounds >= 1 and log.count(cause) in (rounds, rounds + 1), log[-3000:]


def test_model_unavailable_says_when_it_is_retried(no_hub: srv.Server) -> None:
    health_once_retrying(no_hub)
    status, headers, raw = no_hub.request(
        "rest.sock", "POST", "/v1/embeddings", {"input": "x", "model": "bge-small-q2"}
    )
    error = json.loads(raw)["error"]
    assert status == 503 and error["code"] == "model_unavailable", raw
    assert 1 <= int(headers["retry-after"]) <= 30, headers
    rpc = no_hub.rpc("embed", [["x"], 2])["error"]
    assert rpc["code"] == -32003 and 1 <= rpc["data"]["retry_after"] <= 30, rpc


def test_status_command_renders_the_failure(no_hub: srv.Server) -> None:
    health_once_retrying(no_hub)
    env = {**os.environ, "PATH_SOCKETS": str(no_hub.socket_dir.parent)}
    cmd = [sys.executable, "-m", "embedder.cli", "status"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert " 0 B of 0 B" not in done.stdout, done.stdout
    assert done.stdout.count("failures.download: ") == 1, done.stdout
