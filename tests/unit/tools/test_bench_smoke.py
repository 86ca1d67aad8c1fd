"""The benchmark end to end in --quick mode (a real gunicorn, a separate load generator), and
its arithmetic on made-up numbers. No timing is asserted: only that it measures something."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedder.service import Service
from embedder.tools import bench
from embedder.tools.bench import report
from embedder.tools.bench.stats import Completion, percentile, window_rates
from embedder.tools.bench.wire import total_tokens


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
    assert level["peak"]["ops_per_token"] > 0 and level["peak"]["share"] > 0
    assert level["profile"] and abs(sum(s for _, s in level["profile"]) - 1) < 0.5

    (srv,) = data["servers"]
    assert "error" not in srv, srv.get("error")
    assert srv["layout"] == "2x1" and srv["ready_s"] > 0
    rows = srv["scenarios"]
    assert {r["transport"] for r in rows} == {"tcp", "unix"}
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

    md = (out / "latest.md").read_text()
    assert data["machine"]["cpu"] in md
    for heading in (
        "## The limit",
        "## The machine's peaks",
        "## Live server: gunicorn 2x1",
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
    assert by_key["idle"]["value"] == 0.5 and by_key["idle"]["met"]  # 1 thread: 3.0 ms compute
    assert rows[2]["idle_overhead_paired_ms"] == pytest.approx(0.4)
    assert by_key["peer_fp32"]["met"] and by_key["peer_int8"]["met"]
    assert by_key["int8_fp32"]["met"]
    assert result["peer"]["tokens_per_s"] == 500.0
    assert "## Targets" in report.markdown(result | out | _markdown_context())


def _markdown_context() -> dict[str, Any]:
    machine = {"cpu": "CPU", "cpu_flags": [], "cores": 2, "memory_gib": 1.0}
    machine |= {"onnxruntime": "1", "tokenizers": "1", "gunicorn": "1", "python": "3"}
    options = {"corpus_size": 100, "seed": 1, "batch": 32}
    return {"mode": "test", "started": "now", "elapsed_s": 1.0, "machine": machine} | {
        "options": options
    }
