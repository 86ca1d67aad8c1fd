"""The benchmark end to end in --quick mode (a real gunicorn, a separate load generator), and
its arithmetic on made-up numbers. No timing is asserted: only that it measures something."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from embedder.service import Service
from embedder.tools import bench
from embedder.tools.bench import report
from embedder.tools.bench.stats import Completion, percentile, window_rates
from embedder.tools.bench.wire import connect, total_tokens


@pytest.mark.slow
def test_quick_run_writes_sane_json_and_markdown(
    models_root: Path,
    starter_service: Service,  # the starter models are built (and load) before the run
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bench"
    argv = ["--quick", "--models-root", str(models_root), "--out", str(out), "--no-peer"]
    assert bench.main(argv) == 0

    data = json.loads((out / "latest.json").read_text())
    assert data["mode"] == "quick"
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["machine"]["onnxruntime"]
    assert data["elapsed_s"] > 0

    (level,) = data["levels"]
    engine = level["engine"]
    assert engine["texts_per_s"] > 0 and engine["tokens_per_s"] > 0
    assert engine["request_texts_per_s"] > 0
    assert all(ms > 0 for ms in engine["single_ms"].values())

    peak_gops = data["peaks"]["peak_gops"]
    assert {k.split("@")[0] for k in peak_gops} == {"fp32", "u8s8", "u8u8"}
    assert all(v > 0 for v in peak_gops.values())
    if data["machine"]["cores"] > 1:  # all cores also as one single-thread session per core
        modes = {r.get("mode") for r in data["peaks"]["shapes"]}
        assert modes == {None, f"{data['machine']['cores']}x1"}
    assert level["peak"]["ops_per_token"] > 0 and level["peak"]["share"] > 0
    assert level["profile"] and abs(sum(s for _, s in level["profile"]) - 1) < 0.5

    (srv,) = data["servers"]
    assert "error" not in srv, srv.get("error")
    assert srv["layout"] == "2x1" and srv["ready_s"] > 0
    rows = srv["scenarios"]
    assert {r["transport"] for r in rows} == {"tcp", "unix", "rpc"}
    assert {r["transport"] for r in rows if r["concurrency"] > 1} == {"tcp", "unix"}
    assert {r["batch"] for r in rows} == {1, 8}
    for row in rows:
        assert "error" not in row, row
        assert row["errors"] == 0 and row["measured"] > 0
        assert row["texts_per_s"] > 0 and row["tokens_per_s"] > 0
        assert row["latency_ms"]["p50"] > 0
        assert row["vs_limit"] > 0
    idle = [r for r in rows if r["batch"] == 1 and r["concurrency"] == 1]
    assert idle and all(r["compute_p50_ms"] > 0 for r in idle)
    workers = [m for m in srv["memory"] if m["role"] == "worker"]
    assert len(workers) == 2 and all(m["rss_mib"] > 0 for m in workers)
    assert data["peer"] == {"skipped": "--no-peer"}
    assert any(t["key"] == "idle" and t["value"] is not None for t in data["targets"])
    cpu, unix = srv["lone_cpu"]  # the service CPU per lone text, over TCP, then rest.sock
    assert "error" not in cpu and "error" not in unix, (cpu, unix)
    assert cpu["transport"] == "tcp" and len(cpu["rounds"]) >= 2 and cpu["texts"] > 0
    assert unix["transport"] == "unix" and len(unix["rounds"]) >= 2
    assert cpu["server_ms"] > 0 and cpu["engine_ms"] >= cpu["engine_run_ms"] > 0
    # a lone request at idle runs in its HTTP thread: the runners may have had nothing to do
    assert cpu["threads_ms"]["http"] > 0 and "runners" in cpu["threads_ms"]
    target, on_unix = [t for t in data["targets"] if t["key"] == "idle_cpu"]
    assert target["value"] == cpu["over_ms"] and target["latency_ms"] is not None
    assert on_unix["value"] == unix["over_ms"] and on_unix["back_to_back"]
    lone = data["lone"]
    assert {x["path"] for x in lone} == {
        "REST over TCP",
        "REST over rest.sock",
        "JSON-RPC over rpc.sock",
    }
    assert all(x["compute_p50_ms"] > 0 and x["vs_limit"] > 0 for x in lone)
    (tcp,) = [x for x in lone if x["path"] == "REST over TCP"]
    assert tcp["cpu_over_ms"] == cpu["over_ms"] and tcp["cpu_server_ms"] == cpu["server_ms"]
    (sock,) = [x for x in lone if x["path"] == "REST over rest.sock"]
    assert sock["cpu_latency_over_ms"] == unix["latency_over_ms"]

    md = (out / "latest.md").read_text()
    assert data["machine"]["cpu"] in md
    for heading in (
        "## The limit",
        "## The machine's peaks",
        "## Live server: gunicorn 2x1",
        "## Lone requests",
        "service CPU per lone text (ms, over the engine's)",
        "## Targets",
        "## Memory",
    ):
        assert heading in md
    assert md in capsys.readouterr().out


def test_windows_share_each_request_over_its_lifetime() -> None:
    # one request of 2 texts per second, back to back, from t=0 to t=6
    done = [Completion(end=float(i + 1), latency=1.0, texts=2, tokens=20) for i in range(6)]
    rates = window_rates(done, start=0.0, stop=6.0, rounds=3)
    assert rates.rounds == [2.0, 2.0, 2.0]
    assert rates.texts_per_s == 2.0 and rates.tokens_per_s == 20.0 and rates.spread == 0.0
    # a burst: 4 requests answered together after 2 s; windows of 1 s each get half
    burst = [Completion(end=2.0, latency=2.0, texts=1, tokens=5) for _ in range(4)]
    assert window_rates(burst, 0.0, 2.0, 2).rounds == [2.0, 2.0]
    assert window_rates([], 0.0, 3.0, 3).texts_per_s == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_total_tokens_read_from_the_answer_tail() -> None:
    body = b'{"data":[{"embedding":"AAAA"}],"usage":{"prompt_tokens":7,"total_tokens":7}}'
    assert total_tokens(body) == 7
    assert total_tokens(b'{"error":{}}') == 0


def _level(key: str, model: str, precision: str, texts_per_s: float) -> dict[str, Any]:
    engine = {"texts_per_s": texts_per_s, "corpus_tokens": 1000, "single_ms": {"0": 2.0}}
    engine |= {"single_ms_1t": {"0": 3.0}, "request_texts_per_s": texts_per_s / 2}
    return {"key": key, "catalog": "starter", "model": model, "precision": precision} | {
        "engine": engine
    }


def test_ratios_and_targets_from_made_up_numbers() -> None:
    row: dict[str, Any] = {"level": "starter:2", "transport": "tcp", "latency_ms": {"p50": 3.5}}
    rows: list[dict[str, Any]] = [
        row | {"batch": 32, "concurrency": 4, "texts_per_s": 190.0},
        row | {"batch": 1, "concurrency": 16, "texts_per_s": 100.0},
        row | {"batch": 1, "concurrency": 1, "texts_per_s": 50.0, "per_text_ms": {"0": 3.4}},
    ]
    result: dict[str, Any] = {
        "options": {"corpus_size": 100},
        "levels": [
            _level("starter:2", "all-minilm-l6-v2-int8", "int8", 200.0),
            _level("starter:4", "all-minilm-l6-v2", "fp32", 100.0),
        ],
        "peer": {"texts_per_s": 50.0},
        "servers": [{"layout": "2x1", "catalog": "starter", "scenarios": rows}],
    }
    out = report.analyse(result)
    assert out["ratios"]["all-minilm-l6-v2-int8 / all-minilm-l6-v2"] == 2.0
    assert out["ratios"]["all-minilm-l6-v2 / peer"] == 2.0
    by_key = {t["key"]: t for t in out["targets"]}
    assert by_key["batched"]["value"] == 0.95 and by_key["batched"]["met"]
    assert by_key["single_c16"]["value"] == 0.5 and not by_key["single_c16"]["met"]
    assert by_key["single_c16"]["gap"] == "20 points short"
    # 1 thread: 3.0 ms compute; the target reads the per-text pairing (3.4 - 3.0), not 3.5 - 3.0
    assert by_key["idle"]["value"] == pytest.approx(0.4) and by_key["idle"]["met"]
    assert rows[2]["idle_overhead_paired_ms"] == pytest.approx(0.4)
    assert by_key["peer_fp32"]["met"] and by_key["peer_int8"]["met"]
    assert by_key["int8_fp32"]["met"]
    assert result["peer"]["tokens_per_s"] == 500.0
    (lone,) = out["lone"]  # 1 text at c1: 3.5 ms against 3.0 ms on one thread; limit 200/s
    assert lone["path"] == "REST over TCP" and lone["overhead_ms"] == pytest.approx(0.5)
    assert lone["vs_limit"] == 0.25 and lone["no_overhead_vs_limit"] == pytest.approx(1 / 0.6)
    md = report.markdown(result | out | _markdown_context())
    assert "## Targets" in md and "## Lone requests" in md


def test_lone_tail_is_read_against_the_same_texts_compute() -> None:
    """A short and a long text: the server's p99 is the long one's compute; the paired
    columns keep what the server adds (median and worst per text), over texts both timed."""
    per_text = {"0": 3.5, "1": 41.0, "2": 9.0}  # text 2: the engine never timed it
    row: dict[str, Any] = {"level": "starter:2", "transport": "unix", "batch": 1}
    row |= {"concurrency": 1, "texts_per_s": 40.0, "latency_ms": {"p50": 9.0, "p99": 41.0}}
    row |= {"per_text_ms": per_text}
    level = _level("starter:2", "all-minilm-l6-v2-int8", "int8", 200.0)
    level["engine"]["single_ms_1t"] = {"0": 3.0, "1": 38.0}
    result: dict[str, Any] = {"options": {"corpus_size": 100}, "levels": [level]}
    result |= {"servers": [{"layout": "1x2", "catalog": "starter", "scenarios": [row]}]}
    (lone,) = report.analyse(result)["lone"]
    assert lone["paired_texts"] == 2 and lone["compute_max_ms"] == 38.0
    assert lone["overhead_paired_ms"] == pytest.approx(1.75)
    assert lone["overhead_paired_max_ms"] == pytest.approx(3.0)
    md = report.markdown(result | {"lone": [lone]} | _markdown_context())
    assert "20.50 / 38.00" in md and "1.75 / 3.00" in md


def _markdown_context() -> dict[str, Any]:
    machine = {"cpu": "CPU", "cpu_flags": [], "cores": 2, "memory_gib": 1.0}
    machine |= {"onnxruntime": "1", "tokenizers": "1", "gunicorn": "1", "python": "3"}
    options = {"corpus_size": 100, "seed": 1, "batch": 32}
    return {"mode": "test", "started": "now", "elapsed_s": 1.0, "machine": machine} | {
        "options": options
    }


def test_the_load_generators_client_reads_answers_and_reopens_after_close(tmp_path: Path) -> None:
    """Two keep-alive answers on one connection (one arriving in pieces), then a 503 that
    closes it; the next request opens a new connection."""
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(2)
    listener.settimeout(30)
    seen: list[bytes] = []
    answers = [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"],
        [b"HTTP/1.1 200 OK\r\ncontent-length: 3\r", b"\n\r\nab", b"c"],
        [b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ]

    def serve() -> None:
        for per_conn in (3, 1):
            conn, _ = listener.accept()
            conn.settimeout(30)
            with conn:
                for _ in range(per_conn):
                    request = conn.recv(65536)
                    seen.append(request)
                    for piece in answers.pop(0):
                        conn.sendall(piece)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = connect(f"unix:{path}", 30)
    assert client.post("/v1/embeddings", b"{}") == (200, b"hello", 1.0)
    assert client.post("/rpc", b"[]") == (200, b"abc", 1.0)
    assert client.post("/v1/embeddings", b"{}") == (503, b"", 2.0)
    assert client.sock is None  # Connection: close
    assert client.post("/v1/embeddings", b"{}") == (200, b"ok", 1.0)
    server.join(30)
    listener.close()
    assert seen[1].startswith(b"POST /rpc HTTP/1.1\r\n") and seen[1].endswith(b"\r\n\r\n[]")
    assert b"Content-Length: 2\r\n" in seen[0]
