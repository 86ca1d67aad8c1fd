"""The bench's runtimes section on a tiny configuration: the starter's FP32 and INT8 levels on
their real files and both real runtimes, a few texts, the least rounds. No timing is asserted:
only that each contender the service may choose among was run, checked and set against ONNX
Runtime, and that `auto`'s choice is read as a worker's load makes it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from embedder.backends.cache import cpu_key
from embedder.backends.choice import candidates
from embedder.backends.cpu import cpu, read_cpu
from embedder.catalog import STARTER, ModelSpec
from embedder.service import Service
from embedder.store.files import ModelStore
from embedder.tools.bench import report
from embedder.tools.bench.backends_run import measure_backends
from embedder.tools.bench.machine import machine_info
from embedder.tools.bench.plan import QUICK
from embedder.tools.bench.report_backends import section
from embedder.tools.bench.run_levels import Level
from embedder.tools.bench.scenarios import Clock
from embedder.tools.corpus import corpus

FP32, INT8 = STARTER.levels()[1], STARTER.levels()[2]  # paraphrase-MiniLM-L3; MiniLM-L6 INT8
TINY = replace(QUICK, idle_texts=2, engine_seconds=0.0)


@pytest.fixture
def store(tmp_path: Path, starter_service: Service) -> ModelStore:
    """A models root of its own (the section keeps `auto`'s choices and OpenVINO's compiled
    models in it), the built starter files linked from the shared root."""
    shared = starter_service.store.root
    for spec in STARTER:
        for f in spec.files:
            if (shared / spec.id / f.name).is_file():
                (tmp_path / spec.id).mkdir(exist_ok=True)
                (tmp_path / spec.id / f.name).symlink_to(shared / spec.id / f.name)
    return ModelStore(tmp_path, STARTER, offline=True)


def run(store: ModelStore, *specs: ModelSpec) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": {"onnxruntime": "x"}}
    levels = [Level(STARTER, s, store) for s in specs]
    measure_backends(TINY, Clock(60.0), levels, corpus(8, 7), ("", []), result)
    return result


def test_each_level_runs_its_candidates_side_by_side(store: ModelStore) -> None:
    pytest.importorskip("openvino")
    result = run(store, FP32, INT8)
    b = result["backends"]
    bf16 = b["openvino_bf16"]
    assert b["runners"] >= 1 and b["cpu"] and "skipped" not in b
    fp32, int8 = b["levels"]
    assert [lv["key"] for lv in b["levels"]] == ["starter:1", "starter:2"]
    # the service's candidates, and OpenVINO FP32 beside BF16 where auto would take BF16
    want = [
        c.label
        for c in candidates("fp32", openvino=True, bf16=bf16, exact_fp32=False, fp32_graph=False)
    ]
    if bf16:
        want.append("openvino fp32")
    assert [c["label"] for c in fp32["contenders"]] == want
    for c in fp32["contenders"]:
        assert "error" not in c, c
        assert c["texts_per_s"] > 0 and c["lone_ms_p50"] > 0 and len(c["rounds"]) >= 3
        assert c["vs_ort"] > 0 and c["lone_vs_ort"] > 0 and c["cpu_vs_ort"] > 0
        assert c["min_cosine"] >= 0.9999  # BF16 or FP32 of the same file, against ORT FP32
    assert fp32["contenders"][0]["vs_ort"] == pytest.approx(1.0)
    # an INT8 level: its file on ORT, set against its FP32 source on ORT
    assert int8["contenders"][0]["label"] == "onnxruntime int8"
    assert 0.99 <= int8["contenders"][0]["min_cosine"] < 0.99999
    # OpenVINO's int8 form, measured whether or not this CPU has the units to offer it
    assert [c["graph"] for c in int8["contenders"][1:]] == (["fp32"] if bf16 else []) + [
        "int8-weights"
    ]
    form = int8["contenders"][-1]
    assert "error" not in form and form["min_cosine"] >= 0.997, form
    assert form["auto"] == bool(cpu().int8)
    # auto's choice, as a worker's first load made it: one contender, measured here
    for lv in b["levels"]:
        (chosen,) = [c for c in lv["contenders"] if c["chosen"]]
        assert chosen["label"] == lv["auto"]["label"] and lv["auto"]["why"]
    assert fp32["auto"]["measured_now"]
    assert (store.root / FP32.id / ".backend.json").is_file()
    # ... and kept: the next run reads it
    assert not run(store, FP32)["backends"]["levels"][0]["auto"]["measured_now"]

    result |= report.analyse(result | {"levels": [], "servers": [], "options": {}})
    assert [t["where"].split()[0] for t in result["targets"] if t["key"] == "auto_ort"] == [
        "starter:1",
        "starter:2",
    ]
    text = "\n".join(section(result))
    assert "| starter:1 | paraphrase-minilm-l3-v2 | **" in text
    assert text.count("**auto** takes") == 2
    assert "its only candidate here" in text or bf16


def test_without_openvino_the_section_says_why(no_openvino: None) -> None:
    result: dict[str, Any] = {"machine": {}}
    measure_backends(TINY, Clock(60.0), [], [], ("", []), result)
    b = result["backends"]
    assert b["openvino"] is None and "not installed" in b["skipped"]
    text = "\n".join(section(result))
    assert "- CPU: " in text and "- skipped: the openvino package is not installed" in text


def test_the_bench_reads_the_cpu_as_the_backend_choice_does(tmp_path: Path) -> None:
    m = machine_info()
    assert " ".join([m["cpu"], *m["cpu_flags"]]) == cpu_key()
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel Xeon\n"
        "stepping\t: 8\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16\n"
    )
    cpu = read_cpu(info)
    assert cpu.key == "Intel Xeon avx2 avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16"
    assert cpu.ident == "family 6 model 143 stepping 8"
    assert cpu.bf16 == ("amx_bf16", "avx512_bf16") and cpu.int8 == ("amx_int8", "avx512_vnni")


def _level(key: str, model: str, kind: str, precision: str, **chosen: Any) -> dict[str, Any]:
    ort = {"label": f"onnxruntime {precision}", "chosen": False, "vs_ort": 1.0}
    ov = {"label": "openvino bf16", "chosen": True} | chosen
    return {
        "key": key,
        "model": model,
        "kind": kind,
        "precision": precision,
        "contenders": [ort, ov],
    }


def test_the_bf16_goals_are_read_where_the_cpu_has_bf16_units() -> None:
    """Issue 25's goals on BF16 CPUs, from the runtimes section's rounds: FP32 levels and the
    reranker against ONNX Runtime FP32, each INT8 level against its FP32 sibling; none on a
    CPU without BF16 units (there `auto` >= 95 % of ONNX Runtime is the goal)."""
    levels = [
        _level("shapes:1", "bge-small-q1-shape", "embedding", "int8", texts_per_s=500.0),
        _level("shapes:2", "bge-small-q2-shape", "embedding", "fp32", texts_per_s=400.0)
        | {"skipped": None},
        {"key": "shapes:3", "catalog": "shapes", "skipped": "the budget ran out"},
        _level("shapes:4", "bge-base-q4-shape", "embedding", "fp32", vs_ort=3.2),
        _level("shapes:5", "bge-reranker-base-shape", "rerank", "fp32", vs_ort=6.2),
    ]
    levels[1].pop("skipped")
    levels[1]["contenders"][1]["vs_ort"] = 4.5
    result: dict[str, Any] = {"backends": {"bf16_flags": ["amx_bf16"], "levels": levels}}
    got = {t["key"] + " " + t["where"]: t for t in report.analyse(result)["targets"]}
    small = got["bf16_fp32 shapes:2 openvino bf16"]
    assert small["value"] == 4.5 and small["met"]
    base = got["bf16_fp32 shapes:4 openvino bf16"]
    assert not base["met"] and base["gap"] == "1.25x short"
    assert got["bf16_rerank shapes:5 openvino bf16"]["met"]
    sibling = got["int8_sibling shapes:1 openvino bf16 / shapes:2 openvino bf16"]
    assert sibling["value"] == 500.0 / 400.0 and sibling["met"]
    # The section skipped (no openvino): the goals are said not measured, not left out.
    result["backends"] = {"bf16_flags": ["amx_bf16"], "levels": [], "skipped": "no openvino"}
    got = {t["key"]: t for t in report.analyse(result)["targets"]}
    for key in ("bf16_fp32", "bf16_rerank", "int8_sibling"):
        assert got[key]["value"] is None and got[key]["where"] == "no openvino"
    result["backends"] = {"bf16_flags": [], "levels": levels}
    keys = {t["key"] for t in report.analyse(result)["targets"]}
    assert not keys & {"bf16_fp32", "bf16_rerank", "int8_sibling"}


def test_the_reranker_served_is_read_against_the_torch_peer_on_bf16_units() -> None:
    """Shapes: the reranker's best server rate against the torch FP32 peer's pairs/s is a
    goal (3x) on CPUs with BF16 units only (the machine's flags when nothing else said)."""
    default = report.default_layout({"machine": {"cores": 2}})
    rerank = [{"texts_per_s": 35.0, "concurrency": 4, "docs": 20}]
    result: dict[str, Any] = {
        "options": {"catalog": "shapes", "corpus_size": 8, "seed": 1, "batch": 8},
        "machine": {"cores": 2, "cpu_flags": ["avx512f", "amx_bf16"]},
        "levels": [],
        "peer": {"models": {"bge-reranker-base-shape": {"pairs_per_s": 10.0}}},
        "rerank": {"engine": {"pairs_per_s": 20.0}},
        "servers": [{"layout": default, "scenarios": [], "rerank": rerank}],
    }
    got = [t for t in report.analyse(result)["targets"] if t["key"] == "rerank_peer_bf16"]
    assert len(got) == 1 and got[0]["value"] == 3.5 and got[0]["met"]
    result["machine"]["cpu_flags"] = ["avx2"]
    assert not [t for t in report.analyse(result)["targets"] if t["key"] == "rerank_peer_bf16"]
