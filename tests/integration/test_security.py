"""The security matrix against a real gunicorn, one test per row:

| row                          | what must hold                                                   |
|------------------------------|------------------------------------------------------------------|
| socket files and directory   | sockets 0660 or stricter, their directory (and the shared state  |
|                              | dirs in it) owner-only, all owned by the service's user          |
| surfaces on TCP              | JSON-RPC, the dashboard and /metrics refused on TCP unless       |
|                              | EMBEDDER_TCP_EXPOSE names them                                   |
| default TCP address          | with no EMBEDDER_BIND and no mycelium node: 127.0.0.1:8092 only, |
|                              | never 0.0.0.0                                                    |
| API key                      | EMBEDDER_API_KEY: TCP needs the Bearer key (401 without), /health|
|                              | stays open, unix sockets are unaffected                          |
| request texts in logs        | none, with the JSON access log, gunicorn's access log and debug  |
|                              | logging all on, for successes and errors, REST and JSON-RPC      |
| stack traces in responses    | none in the error responses a client can provoke                 |
| admin page                   | a strict Content-Security-Policy, on its errors too              |

No request reaches an internal error (a 500) from outside: the fuzz tests in tests/http look
for one; the 500 path itself is shown hiding its details in
tests/http/test_rest.py::test_internal_errors_hide_details (falcon.testing).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from embedder.server.http.admin import CSP
from embedder.settings import DEFAULT_PORT
from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = pytest.mark.integration

KEY = "test-key-5f1c"
SECRET = "zebra-quartz my private diagnosis 7731"
MODEL = "paraphrase-minilm-l3-v2"
EMBED = {"input": ["hello"], "model": MODEL}
RPC_HEALTH = {"jsonrpc": "2.0", "method": "health", "id": 1}
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, built_root: Path) -> Iterator[srv.Server]:
    """One worker with RPC and metrics exposed on TCP behind an API key, and every log on."""
    server = srv.start(
        tmp_path_factory.mktemp("guarded"),
        built_root,
        workers=1,
        extra_env={
            "EMBEDDER_MODELS": f"{MODEL},minilm-cosine-rerank",
            "EMBEDDER_TCP_EXPOSE": "rpc,metrics",
            "EMBEDDER_API_KEY": KEY,
            "EMBEDDER_ACCESS_LOG_JSON": "1",
            "GUNICORN_CMD_ARGS": "--access-logfile -",  # gunicorn's own, as an operator adds it
            "EMBEDDER_LOG_LEVEL": "debug",
        },
    )
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


def test_socket_files_and_directory_are_private(live: srv.Server) -> None:
    me = os.geteuid()
    d = live.socket_dir.stat()
    assert stat.S_IMODE(d.st_mode) == 0o700 and d.st_uid == me
    for name in ("rest.sock", "rpc.sock", "admin.sock"):
        st = live.sock(name).stat()
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == me
        assert stat.S_IMODE(st.st_mode) & 0o117 == 0, f"{name}: {oct(st.st_mode)}"
    # The worker board and the metrics samples live beside the sockets: owner-only too.
    for shared in (".workers", ".metrics"):
        st = (live.socket_dir / shared).stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == me, shared


def test_tcp_serves_rpc_admin_metrics_only_when_exposed(
    live: srv.Server, guarded: srv.Server
) -> None:
    refused = [
        ("POST", "/rpc", RPC_HEALTH),
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/metrics", None),
    ]
    for method, path, body in refused:
        status, _, raw = live.request("tcp", method, path, body)
        assert status == 404 and b"EMBEDDER_TCP_EXPOSE" in raw, (path, status)
        assert live.request("admin.sock", method, path, body)[0] == 200, path
    # EMBEDDER_TCP_EXPOSE=rpc,metrics: those two are served on TCP; the dashboard still is not.
    status, _, raw = guarded.request("tcp", "POST", "/rpc", RPC_HEALTH, BEARER)
    assert status == 200 and json.loads(raw)["result"]["status"] == "ok"
    assert guarded.request("tcp", "GET", "/metrics", None, BEARER)[0] == 200
    assert guarded.request("tcp", "GET", "/", None, BEARER)[0] == 404


def _start_default(tmp: Path, models_root: Path) -> srv.Server:
    """The service as a user starts it: no EMBEDDER_BIND; the mycelium API points at a closed
    loopback port, so no node answers whatever runs on this machine."""
    env = {k: v for k, v in os.environ.items() if k != "EMBEDDER_BIND"}
    env.update(
        PATH_SOCKETS=str(tmp / "sockets"),
        EMBEDDER_CATALOG="starter",
        EMBEDDER_MODELS=MODEL,
        EMBEDDER_MODELS_ROOT=str(models_root),
        EMBEDDER_MYCELIUM_API=f"http://127.0.0.1:{srv.free_port()}",
        EMBEDDER_WORKERS="1",
        EMBEDDER_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    log = tmp / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=srv.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return srv.Server(proc, tmp / "sockets" / "hero_embedder_provider", DEFAULT_PORT, log, 1, env)


def test_default_tcp_is_loopback_8092(tmp_path: Path, built_root: Path) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            pytest.skip(f"port {DEFAULT_PORT} is taken on this machine")
    server = _start_default(tmp_path, built_root)
    try:
        server.wait_ready(120)
        master = psutil.Process(server.proc.pid)
        bound = {
            (c.laddr.ip, c.laddr.port)
            for c in master.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert bound == {("127.0.0.1", DEFAULT_PORT)}, bound
        assert server.json("tcp", "GET", "/health")[1]["status"] == "ok"
        assert "0.0.0.0" not in server.log.read_text()
    finally:
        assert server.stop() == 0


def test_api_key_guards_tcp_only(guarded: srv.Server) -> None:
    status, headers, raw = guarded.request("tcp", "POST", "/v1/embeddings", EMBED)
    assert status == 401 and headers.get("www-authenticate", "").startswith("Bearer")
    assert json.loads(raw)["error"]["code"] == "unauthorized"
    wrong = {"Authorization": "Bearer not-the-key"}
    assert guarded.request("tcp", "POST", "/v1/embeddings", EMBED, wrong)[0] == 401
    assert guarded.request("tcp", "POST", "/rpc", RPC_HEALTH)[0] == 401
    assert guarded.request("tcp", "POST", "/v1/embeddings", EMBED, BEARER)[0] == 200
    assert guarded.request("tcp", "GET", "/health")[0] == 200  # probes need no secret
    # Unix sockets are guarded by their file modes, not by the key.
    assert guarded.request("rest.sock", "POST", "/v1/embeddings", EMBED)[0] == 200
    assert guarded.request("rpc.sock", "POST", "/rpc", RPC_HEALTH)[0] == 200
    assert guarded.request("admin.sock", "GET", "/")[0] == 200


def test_request_texts_never_reach_the_logs(guarded: srv.Server) -> None:
    rid = f"sec-{time.monotonic_ns()}"
    sent = [
        ("rest.sock", "POST", "/v1/embeddings", {"input": [SECRET, "x"], "model": MODEL}, 200),
        ("tcp", "POST", "/v1/embeddings", {"input": SECRET, "model": MODEL}, 200),
        ("rest.sock", "POST", "/v1/embeddings", {"input": SECRET, "model": "nope"}, 404),
        ("rest.sock", "POST", "/v1/embeddings", {"input": [SECRET, ""], "model": MODEL}, 400),
        ("rest.sock", "POST", "/v1/rerank", {"query": SECRET, "documents": [SECRET]}, 200),
        ("rest.sock", "POST", "/v1/embeddings", f'{{"input": "{SECRET}"'.encode(), 400),
        (
            "rpc.sock",
            "POST",
            "/rpc",
            {"jsonrpc": "2.0", "method": "embed", "params": {"texts": [SECRET]}, "id": 1},
            200,
        ),
        (
            "rpc.sock",
            "POST",
            "/rpc",
            {"jsonrpc": "2.0", "method": "embed", "params": {"texts": [SECRET], "quality": 9}},
            204,  # a notification: no body, whatever happened
        ),
        (
            "rpc.sock",
            "POST",
            "/rpc",
            {
                "jsonrpc": "2.0",
                "method": "rerank",
                "params": {"query": SECRET, "docs": [{"id": 1, "text": SECRET}]},
                "id": 2,
            },
            200,
        ),
    ]
    for i, (via, method, path, body, want) in enumerate(sent):
        headers = {"X-Request-Id": f"{rid}-{i}", **(BEARER if via == "tcp" else {})}
        status, _, _ = guarded.request(via, method, path, body, headers)
        assert status == want, (i, status)
    log, ours = "", []

    def logged() -> bool:
        nonlocal log, ours
        log = guarded.log.read_text()
        ours = [line for line in log.splitlines() if rid in line and "embedder.access {" in line]
        return len(ours) >= len(sent)

    wait_until("every request in the access log", logged)
    access = [json.loads(line[line.index("{") :]) for line in ours]
    assert {e["request_id"] for e in access} == {f"{rid}-{i}" for i in range(len(sent))}
    assert all(e["texts"] is None or isinstance(e["texts"], int) for e in access)
    assert log.count('"POST /v1/embeddings HTTP/1.1"') >= 5, "gunicorn's access log is on"
    for needle in (SECRET, "zebra-quartz", "diagnosis"):
        assert needle not in log, f"{needle!r} is in the log"


def test_error_responses_carry_no_stack_trace(live: srv.Server) -> None:
    """What a client can provoke: bad HTTP (gunicorn's own answer), bad JSON, bad types, an
    unknown model or method, an oversized RPC batch."""
    answers: list[bytes] = []
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(live.sock("rest.sock")))
            s.sendall(raw)
            answers.append(s.recv(65536))
            assert answers[-1].startswith(b"HTTP/1.1 4"), answers[-1][:80]
    for body in (b"{", b'{"input": {"a": [1, 2]}}', b'{"input": "x", "dimensions": "many"}'):
        status, _, raw = live.request("rest.sock", "POST", "/v1/embeddings", body)
        assert status == 400
        answers.append(raw)
    answers.append(live.request("rest.sock", "POST", "/v1/rerank", {"documents": 5})[2])
    answers.append(live.request("rest.sock", "GET", "/v1/models/%00%ff")[2])
    batch = [{"jsonrpc": "2.0", "method": "nope", "id": i} for i in range(101)]
    answers.append(live.request("rpc.sock", "POST", "/rpc", batch)[2])
    answers.append(live.request("rpc.sock", "POST", "/rpc", b"[{]")[2])
    for answer in answers:
        text = answer.decode("utf-8", "replace")
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text


def test_admin_page_has_a_strict_csp(live: srv.Server) -> None:
    status, headers, _ = live.request("admin.sock", "GET", "/")
    assert status == 200 and headers["content-security-policy"] == CSP
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP
    missing = live.request("admin.sock", "GET", "/static/nope.js")
    assert missing[0] == 404 and missing[1]["content-security-policy"] == CSP
