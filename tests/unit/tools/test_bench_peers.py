"""The benchmark's peers: sentence-transformers in FP32 and bf16 and fastembed beside our
all-MiniLM-L6-v2 levels in alternate rounds (each peer a child process, every wait bounded),
the shapes catalog's torch peers in bf16 too, and what the report makes of them. The runs use
the real peers on a handful of texts, and are skipped where torch (CI's `make test` does not
install it) or fastembed's environment (made by `make bench`) are missing."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedder.backends.cpu import cpu, read_cpu
from embedder.service import Service
from embedder.settings import Settings
from embedder.tools.bench import fastembed_env, markdown_peers, peers, plan, report
from embedder.tools.bench.machine import bf16_units
from embedder.tools.bench.peer_child import Child, PeerFailed
from embedder.tools.bench.plan import served_settings
from embedder.tools.bench.run_levels import prepare
from embedder.tools.bench.scenarios import Clock

HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers"))
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch / sentence-transformers missing")
needs_fastembed = pytest.mark.skipif(
    not fastembed_env.ready(fastembed_env.venv_dir()),
    reason="fastembed's environment is not made (make bench makes it)",
)
TEXTS = [
    "a short one",
    "the river runs past the old mill and under the stone bridge",
    "music in the garden",
    "paper, light and a window " * 12,
    "hello",
    "what is the capital of France?",
]


def _child(code: str) -> Child:
    return Child("child", [sys.executable, "-c", code], os.environ)


def test_a_child_that_never_answers_is_killed_within_the_bound() -> None:
    child = _child("import time; time.sleep(60)")
    began = time.monotonic()
    with pytest.raises(PeerFailed, match=r"no answer in 0\.5 s"):
        child.ready(0.5)
    assert time.monotonic() - began < 10  # not the child's 60 s
    assert child.proc.poll() is not None  # killed and reaped
    child.close()


def test_a_child_that_dies_or_fails_says_why() -> None:
    dead = _child("import sys; sys.stderr.write('no model here'); sys.exit(3)")
    with pytest.raises(PeerFailed, match="has exited: no model here"):
        dead.ready(30)
    dead.close()
    failed = _child('print(\'{"error": "loading failed: OSError()"}\', flush=True)')
    with pytest.raises(PeerFailed, match="loading failed"):
        failed.ready(30)
    failed.close()


def test_bf16_units_are_read_from_the_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert read_cpu(cpuinfo).bf16 == ("amx_bf16", "avx512_bf16")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    assert read_cpu(cpuinfo).bf16 == ()
    assert bf16_units() == list(cpu().bf16)


def _ours(level: str, model: str, precision: str, rates: dict[str, float]) -> dict[str, Any]:
    row = {"kind": "ours", "level": level, "model": model, "precision": precision}
    return row | {"texts_per_s": float(np.median(list(rates.values()))), "rounds": rates}


def test_the_report_sets_our_levels_against_each_peer_and_its_best_mode() -> None:
    """No BF16 units: sentence-transformers' best mode is FP32 (bf16 measured slower), so the
    1.3x goal is read against FP32; fastembed's 3x goal against fastembed."""
    contenders = {
        "starter:2": _ours("starter:2", "all-minilm-l6-v2-int8", "int8", {"0": 400.0, "1": 420.0}),
        "starter:4": _ours("starter:4", "all-minilm-l6-v2", "fp32", {"0": 200.0, "1": 220.0}),
        "st-fp32": {"kind": "peer", "what": "st", "texts_per_s": 100.0, "rounds": {"0": 100.0}},
        "st-bf16": {"kind": "peer", "what": "st bf16", "texts_per_s": 20.0, "emulated": True}
        | {"rounds": {"0": 20.0}, "min_cosine": 0.998, "mean_cosine": 0.9995},
        "fastembed": {"kind": "peer", "what": "fe", "texts_per_s": 80.0, "rounds": {"0": 80.0}},
    }
    paired = {"starter:4": {"st-fp32": 2.1, "st-bf16": 10.0, "fastembed": 2.5}}
    paired["starter:2"] = {"st-fp32": 4.0, "st-bf16": 20.0, "fastembed": 5.0}
    batched = {"transport": "tcp", "batch": 32, "concurrency": 4, "latency_ms": {"p50": 9.0}}
    result: dict[str, Any] = {
        "options": {"corpus_size": 100, "seed": 1, "batch": 32},
        "machine": {"cpu": "AMD EPYC 7B13", "cpu_flags": ["avx2"], "cores": 2},
        "levels": [],
        "peers": {"cpu": "AMD EPYC 7B13", "bf16_units": [], "threads": 2, "texts": 100}
        | {"batch": 32, "reference": "st-fp32", "contenders": contenders, "paired": paired},
        "servers": [
            {
                "layout": "1x2",
                "catalog": "starter",
                "scenarios": [
                    batched
                    | {"level": "starter:4", "model": "all-minilm-l6-v2"}
                    | {"texts_per_s": 150.0},
                    batched
                    | {"level": "starter:2", "model": "all-minilm-l6-v2-int8"}
                    | {"texts_per_s": 390.0},
                ],
            }
        ],
    }
    out = report.analyse(result)
    ratios = out["ratios"]
    assert ratios["all-minilm-l6-v2 / st bf16 (alternate rounds)"] == 10.0
    assert ratios["all-minilm-l6-v2-int8 / fastembed (alternate rounds)"] == 5.0
    assert ratios["server FP32 (best load shape) / st bf16"] == 7.5
    targets = {(t["key"], t["where"]): t for t in out["targets"]}
    best = targets[("peer_best", "starter:4 server / st FP32")]
    assert best["value"] == 1.5 and best["met"]
    fe = targets[("peer_fastembed", "starter:4 server / fastembed")]
    assert fe["value"] == 150.0 / 80.0 and not fe["met"]
    assert targets[("peer_fastembed", "starter:2 server / fastembed")]["met"]
    md = "\n".join(markdown_peers.peers(result))
    assert "AMD EPYC 7B13" in md and "**no BF16 units**" in md
    assert "| st-bf16 | st bf16 (emulated bf16) | 20.0 | 1 |" in md
    assert "| 20.00x | 10.00x |" in md  # st-bf16: INT8 level / it, FP32 level / it
    assert "0.998000 / 0.999500" in md
    contenders["fastembed"] = {"kind": "peer", "what": "fe", "skipped": "fe gave no answer"}
    contenders["st-bf16"]["sample"] = 64
    md = "\n".join(markdown_peers.peers(result))
    assert "| fastembed | fe — **not measured**: fe gave no answer | - | - |" in md
    assert "st bf16 (emulated bf16) on 64 of the texts (every n-th)" in md
    contenders["st-bf16"] |= {"texts_per_s": 250.0, "rounds": {"0": 250.0}}
    result["peers"]["bf16_units"] = ["amx_bf16"]
    targets = {(t["key"], t["where"]): t for t in report.analyse(result)["targets"]}
    assert targets[("peer_best", "starter:4 server / st bf16")]["value"] == 150.0 / 250.0
    assert "BF16 units: amx_bf16" in "\n".join(markdown_peers.peers(result))


def _opts(models_root: Path, names: tuple[str, ...]) -> plan.Options:
    quick = plan.parse(["--quick", "--models-root", str(models_root), "--levels", "2,4"])
    return replace(quick, peers=names, peer_rounds=2, peer_seconds=1.0, idle_texts=2)


def _measure(
    models_root: Path,
    names: tuple[str, ...],
    tmp_path: Path,
    settings: Settings | None = None,
) -> dict[str, Any]:
    opts = _opts(models_root, names)
    clock = Clock(600)
    levels, _ = prepare(opts, clock)
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(TEXTS))
    return peers.measure(opts, clock, levels, {"corpus": corpus}, TEXTS, tmp_path, settings)


def _check_ours(got: dict[str, Any]) -> None:
    rows = got["contenders"]
    for level in ("starter:2", "starter:4"):
        assert rows[level]["kind"] == "ours" and rows[level]["backend"] == "onnxruntime"
        assert rows[level]["texts_per_s"] > 0 and len(rows[level]["rounds"]) == 2
    assert rows["starter:2"]["min_cosine"] > 0.99  # the INT8 level, against the reference


@needs_torch
@pytest.mark.slow
def test_sentence_transformers_in_fp32_and_bf16_beside_our_levels(
    models_root: Path, starter_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emulated bf16 (a CPU without BF16 units) runs once, on every 3rd text here."""
    monkeypatch.setattr(peers, "EMULATED_SAMPLE", 2)
    got = _measure(models_root, ("st-fp32", "st-bf16"), tmp_path)
    rows = got["contenders"]
    assert got["reference"] == "st-fp32"
    _check_ours(got)
    assert rows["starter:4"]["min_cosine"] > 0.9999  # our FP32 level is the same function
    fp32, bf16 = rows["st-fp32"], rows["st-bf16"]
    assert fp32["dtype"] == "float32" and bf16["dtype"] == "bfloat16"
    assert fp32["texts_per_s"] > 0 and bf16["texts_per_s"] > 0
    assert fp32["single_ms_p50"] > 0 and bf16["single_ms_p50"] > 0
    assert 0.99 < bf16["min_cosine"] < 1.0  # close to FP32, not FP32
    if got["bf16_units"]:
        assert len(bf16["rounds"]) == 2 and "emulated" not in bf16
        assert set(got["paired"]["starter:4"]) == {"st-fp32", "st-bf16"}
    else:  # its sample's vectors were compared with the same texts' FP32 ones
        assert len(bf16["rounds"]) == 1 and bf16["emulated"] and bf16["sample"] == 2
        assert set(got["paired"]["starter:4"]) == {"st-fp32"}  # no ratio on other texts
    md = "\n".join(markdown_peers.peers({"peers": got}))
    assert "| st-bf16 |" in md and got["cpu"] in md


@needs_fastembed
@pytest.mark.slow
def test_fastembed_runs_our_fp32_graph_from_a_local_folder(
    models_root: Path, starter_service: Service, tmp_path: Path
) -> None:
    got = _measure(models_root, ("fastembed",), tmp_path)
    assert got["reference"] == "starter:4"  # no sentence-transformers in this run
    _check_ours(got)
    fe = got["contenders"]["fastembed"]
    assert fe["texts_per_s"] > 0 and len(fe["rounds"]) == 2 and fe["threads"] == got["threads"]
    assert fe["fastembed"].startswith("0.") and fe["onnxruntime"]
    # the same graph, tokenizer, truncation and pooling as our FP32 level
    assert fe["min_cosine"] > 0.9999
    assert set(got["paired"]["starter:2"]) == {"fastembed"}


@pytest.mark.slow
def test_a_level_the_service_runs_elsewhere_joins_as_it_is_served(
    models_root: Path, starter_service: Service, tmp_path: Path
) -> None:
    """Under the service's policy (here OpenVINO, forced) the FP32 level joins twice: on ONNX
    Runtime and as served, its vectors compared and its rounds paired with ONNX Runtime's."""
    pytest.importorskip("openvino")
    got = _measure(models_root, (), tmp_path, Settings.from_env({"EMBEDDER_BACKEND": "openvino"}))
    rows = got["contenders"]
    served = [k for k, row in rows.items() if row.get("default") and row["level"] == "starter:4"]
    assert len(served) == 1 and served[0].startswith("starter:4 openvino ")
    row = rows[served[0]]
    assert row["backend"] == "openvino" and row["computes"] in ("fp32", "bf16")
    assert row["texts_per_s"] > 0 and len(row["rounds"]) == 2
    assert "default" not in rows["starter:4"] and rows["starter:4"]["backend"] == "onnxruntime"
    assert got["reference"] == "starter:4"  # no sentence-transformers: our FP32 level on ORT
    assert row["min_cosine"] > 0.999
    ort = rows["starter:4"]["rounds"]
    ratios = sorted(row["rounds"][r] / ort[r] for r in ort)
    assert got["paired"][served[0]]["starter:4"] == pytest.approx(np.median(ratios))
    # Each level is served by one runtime: exactly one of its rows says so.
    for level in ("starter:2", "starter:4"):
        assert sum(1 for r in rows.values() if r["level"] == level and r.get("default")) == 1
    # Under ONNX Runtime alone the level joins once, as served.
    got = _measure(
        models_root, (), tmp_path, Settings.from_env({"EMBEDDER_BACKEND": "onnxruntime"})
    )
    assert set(got["contenders"]) == {"starter:2", "starter:4"}
    assert all(row["default"] for row in got["contenders"].values())


def test_the_level_as_served_is_checked_against_the_reference_and_onnxruntime() -> None:
    """Where the service serves the FP32 level on OpenVINO in BF16: its vectors against
    sentence-transformers FP32 (>= 0.9998) and, with BF16 units, its rate against the same
    level on ONNX Runtime in the same rounds (>= 3x); the peers' goals read once per level."""
    served = "starter:4 openvino bf16"
    contenders = {
        "starter:4": _ours("starter:4", "all-minilm-l6-v2", "fp32", {"0": 100.0, "1": 100.0}),
        served: _ours("starter:4", "all-minilm-l6-v2", "fp32", {"0": 420.0, "1": 400.0})
        | {"default": True, "backend": "openvino", "computes": "bf16"}
        | {"min_cosine": 0.99991, "mean_cosine": 0.99999},
        "st-fp32": {"kind": "peer", "what": "st", "texts_per_s": 150.0, "rounds": {"0": 150.0}},
    }
    paired = {"starter:4": {"st-fp32": 0.67}, served: {"st-fp32": 2.7, "starter:4": 4.1}}
    result: dict[str, Any] = {
        "options": {"corpus_size": 100, "seed": 1, "batch": 32},
        "machine": {"cpu": "Intel Xeon", "cpu_flags": ["avx512f"], "cores": 2},
        "levels": [],
        "peers": {"cpu": "Intel Xeon", "bf16_units": ["amx_bf16"], "threads": 2, "texts": 100}
        | {"batch": 32, "reference": "st-fp32", "contenders": contenders, "paired": paired},
        "servers": [],
    }
    out = report.analyse(result)
    assert out["ratios"]["all-minilm-l6-v2 (openvino bf16) / onnxruntime (alternate rounds)"] == 4.1
    assert out["ratios"]["all-minilm-l6-v2 (openvino bf16) / st FP32 (alternate rounds)"] == 2.7
    assert out["ratios"]["all-minilm-l6-v2 / st FP32 (alternate rounds)"] == 0.67
    targets = {(t["key"], t["where"]): t for t in out["targets"]}
    assert targets[("served_cosine", f"{served} / st FP32")]["met"]
    assert targets[("default_ort", f"{served} / starter:4 onnxruntime")]["value"] == 4.1
    assert [w for k, w in targets if k == "peer_best"] == [f"{served} server / st FP32"]
    md = "\n".join(markdown_peers.peers(result))
    assert f"| {served} (BF16) / it |" in md  # what it computes in
    contenders[served]["min_cosine"] = 0.9997
    result["peers"]["bf16_units"] = []
    targets = {(t["key"], t["where"]): t for t in report.analyse(result)["targets"]}
    assert targets[("served_cosine", f"{served} / st FP32")]["gap"] == "min cosine 0.999700"
    assert not any(k == "default_ort" for k, _ in targets)


def test_the_served_row_reads_the_servers_settings() -> None:
    """`--server-env` is what the servers run with: the served row reads it too."""
    opts = plan.parse(["--quick", "--server-env", "EMBEDDER_BACKEND=onnxruntime"])
    assert served_settings(opts).backend == "onnxruntime"
    opts = plan.parse(["--quick", "--server-env", "EMBEDDER_EXACT_FP32=1"])
    assert served_settings(opts).exact_fp32


def test_a_level_the_service_could_not_open_is_said_and_read_once() -> None:
    """The served row failed to open: the level's goals are read once, on its ONNX Runtime
    row, and the served cosine is said not measured."""
    contenders = {
        "starter:4": _ours("starter:4", "all-minilm-l6-v2", "fp32", {"0": 100.0}),
        "starter:4 as served": {"kind": "ours", "level": "starter:4", "precision": "fp32"}
        | {"model": "all-minilm-l6-v2", "skipped": "openvino: cannot compile"},
        "st-fp32": {"kind": "peer", "what": "st", "texts_per_s": 50.0, "rounds": {"0": 50.0}},
    }
    result: dict[str, Any] = {
        "options": {"corpus_size": 100, "seed": 1, "batch": 32},
        "machine": {"cpu": "x", "cpu_flags": [], "cores": 2},
        "levels": [],
        "peers": {"cpu": "x", "bf16_units": [], "threads": 2, "texts": 100, "batch": 32}
        | {"reference": "st-fp32", "contenders": contenders, "paired": {"starter:4": {}}},
        "servers": [],
    }
    targets = report.analyse(result)["targets"]
    assert [t["where"] for t in targets if t["key"] == "peer_best"] == [
        "starter:4 server / st FP32"
    ]
    said = [t for t in targets if t["key"] == "served_cosine"]
    assert len(said) == 1 and said[0]["value"] is None and "cannot compile" in said[0]["where"]
    assert "| starter:4 as served |" in "\n".join(markdown_peers.peers(result))
