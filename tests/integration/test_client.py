"""embedder.client and `embedder status` against a real gunicorn on its real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.cli import main as cli
from embedder.client import (
    Client,
    HttpError,
    InvalidParamsError,
    NotReadyError,
    RpcError,
    ServiceUnreachable,
    UnknownModelError,
)
from embedder.service import Service
from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = pytest.mark.integration

TEXTS = ["The quick brown fox.", "Vectors for retrieval", "日本語 🙂"]
PARIS = "Paris is the capital and largest city of France."
DOCS = [
    ("berlin", "Berlin is the capital of Germany."),
    ("paris", PARIS),
    ("bread", "Sourdough bread needs a long fermentation."),
]


@pytest.fixture(scope="module")
def every_worker_ready(live: srv.Server) -> srv.Server:
    """`live` waits for one `ok` from /health, but each worker loads its models on its own, so
    the other may still be loading: a JSON-RPC batch [health, mem_info] is answered by a single
    worker, so wait until every worker pid has said ok."""
    batch = [
        {"jsonrpc": "2.0", "method": "health", "id": 1},
        {"jsonrpc": "2.0", "method": "mem_info", "id": 2},
    ]
    ok: set[int] = set()

    def every_worker_ok() -> bool:
        health, mem = live.json("rpc.sock", "POST", "/rpc", batch)[1]
        if health["result"]["status"] == "ok":
            ok.add(mem["result"]["answered_by"])
        return ok >= {w["pid"] for w in mem["result"]["workers"]}

    wait_until("every worker answering ok", every_worker_ok)
    return live


@pytest.fixture
def client(every_worker_ready: srv.Server) -> Client:
    return Client(every_worker_ready.sock("rpc.sock"))


def test_embed_equals_the_engine(client: Client, starter_service: Service) -> None:
    for model in ("all-minilm-l6-v2", "all-minilm-l6-v2-int8", "paraphrase-minilm-l3-v2"):
        ref = starter_service.embed(TEXTS, starter_service.resolve(model))
        got = client.embed(TEXTS, model=model)
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (3, 384)
        np.testing.assert_array_equal(got.vectors, ref.vectors)
        assert got.model == model and got.dims == 384
        assert got.token_counts == tuple(ref.tokens) and got.tokens == ref.total_tokens
        assert not got.vectors.flags.writeable
    by_level = client.embed(TEXTS, quality=2)
    assert by_level.model == "all-minilm-l6-v2-int8" and by_level.quality == 2


def test_embed_compact_decodes_close_to_float(client: Client, starter_service: Service) -> None:
    ref = starter_service.embed(TEXTS, starter_service.resolve("all-minilm-l6-v2-int8"))
    int8 = client.embed_compact(TEXTS, model="all-minilm-l6-v2-int8")
    assert int8.precision == "int8" and int8.scales is not None
    assert all(-127 <= x <= 127 and float(x).is_integer() for v in int8.vectors for x in v)
    step = np.asarray(int8.scales)[:, None]
    assert np.all(np.abs(int8.to_float() - ref.vectors) <= step / 2 + 1e-6)
    ref = starter_service.embed(TEXTS, starter_service.resolve("all-minilm-l6-v2"))
    fp16 = client.embed_compact(TEXTS, model="all-minilm-l6-v2")
    assert fp16.precision == "fp16" and fp16.scales is None
    np.testing.assert_allclose(fp16.to_float(), ref.vectors, atol=1e-3)


def test_rerank_puts_paris_first(client: Client) -> None:
    hits = client.rerank("What is the capital of France?", DOCS)
    assert hits[0].id == "paris"
    assert hits[0].index == 1 and hits[0].score > hits[1].score >= hits[2].score
    plain = client.rerank("What is the capital of France?", [t for _, t in DOCS], top_k=2)
    assert len(plain) == 2 and plain[0].id == "1" and plain[0].score == hits[0].score


def test_typed_errors(client: Client) -> None:
    with pytest.raises(UnknownModelError) as unknown:
        client.embed(["x"], model="no-such-model")
    assert unknown.value.code == -32002 and "no-such-model" in unknown.value.message
    assert unknown.value.data["type"] == "UnknownModel"
    with pytest.raises(InvalidParamsError) as level:
        client.embed(["x"], quality=9)
    assert level.value.data["param"] == "quality"
    with pytest.raises(InvalidParamsError) as bad:
        client.embed([])
    assert bad.value.code == -32602 and bad.value.data["param"] == "input"
    with pytest.raises(InvalidParamsError):
        client.rerank("q", ["a"], top_k=0)
    with pytest.raises(RpcError) as missing:
        client.call("no.such.method")
    assert type(missing.value) is RpcError and missing.value.code == -32601
    assert not isinstance(missing.value, NotReadyError)


def test_other_methods(client: Client) -> None:
    assert client.health().status == "ok"
    status = client.status()
    assert status.catalog == "starter" and status.health.models_ready
    assert [m.id for m in status.models] == [m.id for m in STARTER]
    models = client.models()
    assert all(m.ready for m in models) and models[1].precision == "int8"
    assert client.model_ids() == [m.id for m in STARTER]
    assert len(client.mem_info()["workers"]) == 2
    assert client.ort_info()["version_ok"] is True
    names = {m["name"] for m in client.discover()["methods"]}
    assert {"embed", "rerank", "status", "rpc.discover"} <= names


def test_one_client_shared_by_threads(client: Client, starter_service: Service) -> None:
    ref = starter_service.embed(["thread"], starter_service.resolve("all-minilm-l6-v2"))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                got = client.embed(["thread"], model="all-minilm-l6-v2")
                np.testing.assert_array_equal(got.vectors, ref.vectors)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_unreachable_and_refusing_listeners(every_worker_ready: srv.Server, tmp_path: Path) -> None:
    live = every_worker_ready
    missing = tmp_path / "nothing-here" / "rpc.sock"
    with pytest.raises(ServiceUnreachable, match=str(missing)) as exc:
        Client(missing).health()
    assert isinstance(exc.value, ConnectionError)
    with pytest.raises(HttpError, match="EMBEDDER_TCP_EXPOSE") as tcp:
        Client(url=f"http://127.0.0.1:{live.port}").status()  # JSON-RPC is not on TCP
    assert tcp.value.status == 404


def test_tcp_url_embeds_and_reranks_over_rest(
    every_worker_ready: srv.Server, starter_service: Service
) -> None:
    """The README's `Client(url="http://127.0.0.1:8092")` with default settings: TCP serves
    REST, so embed, rerank and health go there; the answers equal the unix socket's."""
    with Client(url=f"http://127.0.0.1:{every_worker_ready.port}") as tcp:
        assert tcp.health().status == "ok" and tcp.health().models_ready is True
        ref = starter_service.embed(TEXTS, starter_service.resolve("all-minilm-l6-v2"))
        got = tcp.embed(TEXTS, model="all-minilm-l6-v2")
        np.testing.assert_array_equal(got.vectors, ref.vectors)
        assert got.dims == 384 and got.quality == 4 and got.tokens == ref.total_tokens
        by_level = tcp.embed(TEXTS, quality=2)
        assert by_level.model == "all-minilm-l6-v2-int8" and by_level.quality == 2
        hits = tcp.rerank("What is the capital of France?", DOCS)
        with Client(every_worker_ready.sock("rpc.sock")) as unix:
            assert hits == unix.rerank("What is the capital of France?", DOCS)
        assert hits[0].id == "paris" and 0 <= hits[-1].score <= hits[0].score <= 1
        with pytest.raises(UnknownModelError) as unknown:
            tcp.embed(["x"], model="no-such-model")
        assert unknown.value.data["code"] == "model_not_found"
        with pytest.raises(InvalidParamsError):
            tcp.embed(["x"], quality=9)
        with pytest.raises(InvalidParamsError):
            tcp.embed([])


def test_status_command_against_the_live_server(every_worker_ready: srv.Server) -> None:
    live = every_worker_ready
    env = {**os.environ, "PATH_SOCKETS": str(live.socket_dir.parent)}
    cmd = [sys.executable, "-m", "embedder.cli", "status"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == cli.OK, done.stderr
    assert done.stdout.startswith("ok: catalog starter")
    assert all(m.id in done.stdout for m in STARTER)
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == cli.OK and json.loads(done.stdout)["status"] == "ok"


def _cli(live: srv.Server, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH_SOCKETS": str(live.socket_dir.parent)}
    env.pop("EMBEDDER_CATALOG", None)
    env.pop("EMBEDDER_MODELS_ROOT", None)
    cmd = [sys.executable, "-m", "embedder.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_cli_embeds_and_reranks_over_the_socket_and_tcp(every_worker_ready: srv.Server) -> None:
    live = every_worker_ready
    url = f"http://127.0.0.1:{live.port}"
    done = _cli(live, "embed", "hello", "world", "--quality", "2")
    assert done.returncode == cli.OK, done.stderr
    head, first, second = done.stdout.splitlines()
    assert second.startswith("1  [") and second.endswith("world")
    assert head.startswith("all-minilm-l6-v2-int8 (level 2): 2 texts, 384 dims, ")
    assert head.endswith(f"via {live.sock('rpc.sock')}")
    assert first.startswith("0  [") and "norm 1.000" in first and first.endswith("hello")
    unix = json.loads(_cli(live, "embed", "hello", "--model", "all-minilm-l6-v2", "--json").stdout)
    done = _cli(live, "embed", "hello", "--model", "all-minilm-l6-v2", "--json", "--url", url)
    assert done.returncode == cli.OK, done.stderr
    tcp = json.loads(done.stdout)
    assert tcp["embeddings"] == unix["embeddings"] and len(tcp["embeddings"][0]) == 384
    docs = [text for _, text in DOCS]
    for where in ([], ["--url", url]):
        done = _cli(live, "rerank", "What is the capital of France?", *docs, *where)
        assert done.returncode == cli.OK, done.stderr
        rows = done.stdout.splitlines()
        assert rows[0].split() == ["rank", "score", "doc", "text"]
        assert rows[1].split()[2:4] == ["1", "Paris"]
    done = _cli(live, "rerank", "q", "a", "b", "--top-k", "1", "--json")
    assert len(json.loads(done.stdout)) == 1
    done = _cli(live, "embed", "x", "--model", "no-such-model")
    assert done.returncode == cli.USAGE and "unknown model 'no-such-model'" in done.stderr


def test_cli_status_over_tcp_reads_health(every_worker_ready: srv.Server) -> None:
    """TCP serves REST only by default: `status --url` says what /health says, and why no more."""
    live = every_worker_ready
    done = _cli(live, "status", "--url", f"http://127.0.0.1:{live.port}")
    assert done.returncode == cli.OK, done.stderr
    assert done.stdout.startswith("ok: models ready: ")
    assert all(m.id in done.stdout for m in STARTER)
    assert "EMBEDDER_TCP_EXPOSE=rpc" in done.stdout
    done = _cli(live, "status", "--url", f"http://127.0.0.1:{live.port}", "--json")
    assert json.loads(done.stdout)["status"] == "ok"


def test_cli_models_list_shows_the_running_services_catalog(every_worker_ready: srv.Server) -> None:
    live = every_worker_ready
    done = _cli(live, "models", "list", "--json")
    assert done.returncode == cli.OK, done.stderr
    doc = json.loads(done.stdout)
    assert doc["catalog"] == "starter"
    assert doc["models_root"] == live.rpc("status")["result"]["models_root"]
    assert all(m["present"] for m in doc["models"])
    assert f"the one the service on {live.sock('rpc.sock')} serves" in done.stderr


def test_the_start_up_log_lists_the_settings_in_short_lines(live: srv.Server) -> None:
    lines = [line for line in live.log.read_text().splitlines() if "settings " in line]
    assert any("settings changed: " in line for line in lines)
    assert any("settings at defaults: " in line for line in lines)
    assert all(len(line) <= 160 for line in lines), max(lines, key=len)
