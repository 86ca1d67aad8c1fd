"""A real gunicorn on real sockets: the openai client, curl, socket modes, listeners."""

from __future__ import annotations

import json
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from embedder.service import Service
from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = pytest.mark.integration

TEXTS = ["The quick brown fox.", "Vectors for retrieval", "日本語 🙂"]


def test_openai_client_base64_and_float(live: srv.Server, starter_service: Service) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{live.port}/v1", api_key="unused")
    ref = starter_service.embed(TEXTS, starter_service.resolve("all-minilm-l6-v2"))
    default = client.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)  # base64
    floats = client.embeddings.create(
        model="all-minilm-l6-v2", input=TEXTS, encoding_format="float"
    )
    for resp in (default, floats):
        got = np.array([d.embedding for d in resp.data], dtype=np.float32)
        np.testing.assert_array_equal(got, ref.vectors)
        assert resp.usage.prompt_tokens == ref.total_tokens
    small = client.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=32)
    assert len(small.data[0].embedding) == 32


def test_curl_over_each_unix_socket(live: srv.Server) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"input": "hello", "model": "all-minilm-l6-v2"})
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--unix-socket",
            str(live.sock("rest.sock")),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "http://localhost/v1/embeddings",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert len(json.loads(out.stdout)["data"][0]["embedding"]) == 384
    rpc = json.dumps({"jsonrpc": "2.0", "method": "health", "id": 1})
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--unix-socket",
            str(live.sock("rpc.sock")),
            "-d",
            rpc,
            "http://localhost/rpc",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["result"]["status"] == "ok"
    out = subprocess.run(
        [curl, "-sS", "--unix-socket", str(live.sock("admin.sock")), "http://localhost/health"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["status"] == "ok"


def test_rpc_and_admin_refused_over_tcp(live: srv.Server) -> None:
    status, body = live.json("tcp", "POST", "/rpc", {"jsonrpc": "2.0", "method": "health", "id": 1})
    assert status == 404 and "not served" in body["error"]["message"]
    status, _ = live.json("tcp", "GET", "/")
    assert status == 404


def test_socket_modes(live: srv.Server) -> None:
    assert stat.S_IMODE(live.socket_dir.stat().st_mode) & 0o077 == 0
    for name in ("rest.sock", "rpc.sock", "admin.sock"):
        mode = stat.S_IMODE(live.sock(name).stat().st_mode)
        assert mode & 0o117 == 0, oct(mode)  # 0660 or stricter
        assert stat.S_ISSOCK(live.sock(name).stat().st_mode)


def test_requests_spread_and_answers_agree(live: srv.Server) -> None:
    seen: set[int] = set()
    statuses = []
    for _ in range(40):
        mem = live.rpc("mem_info")["result"]
        seen.add(mem["answered_by"])
        statuses.append(sorted(w["pid"] for w in mem["workers"]))
        if len(seen) >= 2:
            break
    assert len(seen) == 2, "both workers should answer"
    assert len({tuple(s) for s in statuses}) == 1, "every worker lists the same workers"
    status = live.rpc("status")["result"]
    assert status["status"] == "ok" and status["catalog"] == "starter"
    assert len(status["workers"]) == 2 and set(status["workers"].values()) == {"ok"}


def test_second_instance_refuses_live_sockets(live: srv.Server, tmp_path: Path) -> None:
    again = srv.start(
        tmp_path,
        Path(live.env["EMBEDDER_MODELS_ROOT"]),
        workers=1,
        tcp=False,
        socket_root=live.socket_dir.parent,
    )
    code = again.proc.wait(timeout=60)
    assert code != 0
    assert "another instance is serving" in again.log.read_text()
    assert live.json("rest.sock", "GET", "/health")[0] == 200  # the first one still serves


def test_start_says_starting_then_ok_and_replaces_stale_sockets(tmp_path: Path) -> None:
    """A fresh models root must build all-MiniLM-L6-v2 first: the window is observable."""
    socks = tmp_path / "sockets" / "hero_embedder_provider"
    socks.mkdir(parents=True)
    import socket as pysocket

    stale = pysocket.socket(pysocket.AF_UNIX)
    stale.bind(str(socks / "rest.sock"))
    stale.close()  # a socket file nobody listens on
    server = srv.start(
        tmp_path,
        tmp_path / "fresh-models",
        workers=1,
        extra_env={"EMBEDDER_MODELS": "all-minilm-l6-v2"},
    )
    try:
        server.wait_sockets()
        status, body = server.json("rest.sock", "GET", "/health")
        assert status == 200 and body["status"] == "starting"
        code, headers, raw = server.request(
            "rest.sock", "POST", "/v1/embeddings", {"input": "x", "model": "all-minilm-l6-v2"}
        )
        assert code == 503 and "retry-after" in headers
        assert json.loads(raw)["error"]["code"] == "model_not_ready"
        server.wait_ready()
        assert server.json("rest.sock", "GET", "/health")[1]["status"] == "ok"
    finally:
        assert server.stop() == 0
    assert not (socks / "rest.sock").exists(), "sockets are removed on exit"


def _requests_total(text: str, route: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("embedder_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_over_workers(live: srv.Server) -> None:
    before = _requests_total(live.request("rest.sock", "GET", "/metrics")[2].decode(), "/v1/models")
    pids = set()
    for _ in range(30):
        assert live.request("rest.sock", "GET", "/v1/models")[0] == 200
        pids.add(live.rpc("mem_info")["result"]["answered_by"])
    assert len(pids) == 2

    def counted() -> float:
        scrape = live.request("rest.sock", "GET", "/metrics")[2].decode()
        return _requests_total(scrape, "/v1/models") - before

    # The worker that answers the scrape writes its own counts first; its sibling's arrive
    # with that worker's next metrics refresh round.
    wait_until("both workers' counts in the sum", lambda: counted() >= 30)
    assert counted() == 30
    assert live.request("tcp", "GET", "/metrics")[0] == 404


def test_a_worker_that_exits_leaves_its_last_counts(
    tmp_path_factory: pytest.TempPathFactory, built_root: Path
) -> None:
    """A worker keeps its counts in memory between metrics refresh rounds: one that exits
    (here the master takes a worker away, SIGTTOU) writes them as it goes, so the survivor's
    scrapes still count every request."""
    server = srv.start(tmp_path_factory.mktemp("exits"), built_root, workers=2)
    try:
        server.wait_ready()
        master = psutil.Process(server.proc.pid)
        assert len(master.children()) == 2
        pids: set[int] = set()
        sent = 0
        while len(pids) < 2 or sent < 40:
            assert server.request("rest.sock", "GET", "/v1/models")[0] == 200
            sent += 1
            pids.add(server.rpc("mem_info")["result"]["answered_by"])
        server.proc.send_signal(signal.SIGTTOU)
        wait_until("one worker left", lambda: len(master.children()) == 1)
        scrape = server.request("rest.sock", "GET", "/metrics")[2].decode()
        assert _requests_total(scrape, "/v1/models") == sent
    finally:
        server.stop()


def test_the_first_scrape_has_every_worker_s_gauges(
    tmp_path_factory: pytest.TempPathFactory, built_root: Path
) -> None:
    """A scrape is answered by one worker and refreshes only that worker's gauges; the
    other's RSS is in the very first scrape of a fresh server only because that worker's own
    metrics refresh thread wrote it (prometheus_client multiprocess mode)."""
    server = srv.start(tmp_path_factory.mktemp("gauges"), built_root, workers=2)
    prefix = 'embedder_worker_resident_memory_bytes{pid="'

    def scrape() -> str:
        return server.request("rest.sock", "GET", "/metrics")[2].decode()

    try:
        server.wait_ready()
        pids = {int(server.rpc("mem_info")["result"]["answered_by"]) for _ in range(30)}
        assert len(pids) == 2
        text = scrape()  # the first
        rss = {
            int(line[len(prefix) :].split('"')[0]): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix)
        }
        assert set(rss) == pids
        assert all(value > 0 for value in rss.values()), rss  # 0: never refreshed
        ready = 'embedder_model_ready{model="all-minilm-l6-v2"} 1.0'
        wait_until("both workers' threads report the model ready", lambda: ready in scrape())
    finally:
        server.stop()


def test_default_layout_one_worker_with_a_runner_per_core(
    tmp_path: Path, built_root: Path, starter_service: Service
) -> None:
    """What the service picks by itself on 2 cores: 1 worker, 2 single-thread runners sharing
    its queue. Concurrent requests of different sizes each get their own rows back."""
    import threading

    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={"EMBEDDER_THREADS": "2", "EMBEDDER_MODELS": "all-minilm-l6-v2-int8"},
    )
    requests = [
        [f"request {i}, text {j}: " + "words " * (i + 4 * j) for j in range(1 + i % 6)]
        for i in range(12)
    ]
    got: dict[int, Any] = {}

    def call(i: int) -> None:
        got[i] = server.json(
            "tcp",
            "POST",
            "/v1/embeddings",
            {"input": requests[i], "model": "all-minilm-l6-v2-int8", "encoding_format": "float"},
        )

    try:
        server.wait_ready()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        status = server.rpc("status")["result"]
    finally:
        assert server.stop() == 0
    for i, texts in enumerate(requests):
        status, body = got[i]
        assert status == 200, body
        vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        ref = starter_service.embed(texts, starter_service.resolve("all-minilm-l6-v2-int8"))
        np.testing.assert_allclose(vectors, ref.vectors, atol=1e-5)
        assert body["usage"]["prompt_tokens"] == ref.total_tokens
    print(f"\n1x2 runners, status: {str(status)[:600]}")


def test_settings_that_went_are_named_at_start_and_change_nothing(
    tmp_path: Path, built_root: Path, starter_service: Service
) -> None:
    """An old configuration keeps working: settings that went are named in the log with what
    the service does instead (micro-batching off here would have left no batcher), and a
    misspelt one with the name it was probably meant to be."""
    model = "all-minilm-l6-v2-int8"
    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={
            "EMBEDDER_THREADS": "2",
            "EMBEDDER_MODELS": model,
            "EMBEDDER_MICRO_BATCH": "0",
            "EMBEDDER_LONE_SESSION": "1",
            "EMBEDDER_MAX_QUEUE_WAITS": "5",
        },
    )
    texts = ["a lone query about the weather", "and another " * 20]
    try:
        server.wait_ready()
        code, body = server.json("tcp", "POST", "/v1/embeddings", {"input": texts, "model": model})
        assert code == 200, body
        status = server.rpc("status")["result"]
        log = server.log.read_text()
    finally:
        assert server.stop() == 0
    assert "EMBEDDER_MICRO_BATCH is no longer read (ignored): concurrent requests" in log, log
    assert "EMBEDDER_LONE_SESSION is no longer read (ignored)" in log
    assert (
        "EMBEDDER_MAX_QUEUE_WAITS is not a setting of this service (ignored); did you mean "
        "EMBEDDER_MAX_QUEUE_WAIT?" in log
    )
    (served,) = [m for m in status["models"] if m["id"] == model]
    assert served["batching"]["runs"] >= 1, served  # micro-batched all the same
    ref = starter_service.embed(texts, starter_service.resolve(model))
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, ref.vectors, atol=1e-5)
