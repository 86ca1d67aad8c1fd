"""The shapes-catalog benchmark's pieces that need no torch: the stand-in's ONNX initializers
map onto every Hugging Face weight (so the peer runs the same weights), the RAG documents are
~100 tokens, the catalog is chosen, and issue 12's goals come out of made-up numbers."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tokenizers import Tokenizer

from embedder.prepare.shapes import SHAPES, Shape, make_shape_model, random_weights, with_layers
from embedder.tools.bench import markdown_limit, markdown_server, plan, report
from embedder.tools.bench.peer_torch_load import hf_weights
from embedder.tools.bench.rerank import DOC_TOKENS, rag_set
from tests.models import tokenizer_json


@pytest.mark.parametrize("name", ["bge-small", "bge-reranker-base"])
def test_onnx_initializers_give_back_every_hf_weight(name: str, tmp_path: Path) -> None:
    shape = with_layers(SHAPES[name], 1, 500)
    path = tmp_path / "m.onnx"
    onnx.save(make_shape_model(shape, seed=3), str(path))
    classifier = shape.head == "classifier"
    got = hf_weights(path, classifier)
    want = random_weights(shape, seed=3)
    prefix = "roberta." if classifier else ""
    named = {(k if k.startswith("classifier.") else prefix + k): v for k, v in want.items()}
    assert set(got) == set(named)
    for key, value in named.items():
        assert got[key].shape == value.shape, key  # torch layout: [out, in]
        np.testing.assert_array_equal(got[key], value)


def test_rag_documents_are_about_a_hundred_tokens() -> None:
    query, docs = rag_set(tokenizer_json(), 12, seed=5)
    tok = Tokenizer.from_file(str(tokenizer_json()))
    tok.no_truncation()
    tok.no_padding()  # this tokenizer.json pads to 128 by itself
    lengths = [len(tok.encode(d, add_special_tokens=False).ids) for d in docs]
    assert len(docs) == 12 and len(set(docs)) == 12
    assert all(DOC_TOKENS <= n <= DOC_TOKENS + 12 for n in lengths), lengths
    assert 6 <= len(query.split()) <= 16
    assert rag_set(tokenizer_json(), 12, seed=5) == (query, docs)  # deterministic


def test_the_catalog_is_chosen_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDDER_CATALOG", raising=False)
    assert plan.parse([]).catalog == "starter"
    assert plan.parse(["--catalog", "shapes"]).catalog == "shapes"
    monkeypatch.setenv("EMBEDDER_CATALOG", "shapes")
    opts = plan.parse([])
    assert opts.catalog == "shapes" and opts.rerank_calls and opts.limit_layouts
    monkeypatch.setenv("EMBEDDER_CATALOG", "bge")  # the service's default: the starter bench
    assert plan.parse([]).catalog == "starter"


def _level(model: str, level: int, precision: str, rate: float) -> dict[str, Any]:
    engine = {"texts_per_s": rate, "corpus_tokens": 1000, "single_ms": {}, "single_ms_1t": {}}
    return {"key": f"shapes:{level}", "catalog": "shapes", "model": model, "level": level} | {
        "precision": precision,
        "engine": engine,
    }


def test_issue_12_goals_from_made_up_numbers() -> None:
    batched = {"level": "shapes:4", "transport": "tcp", "latency_ms": {"p50": 900.0}}
    rerank_row = {"model": "bge-reranker-base-shape", "transport": "tcp", "docs": 20}
    result: dict[str, Any] = {
        "options": {"corpus_size": 64, "catalog": "shapes"},
        "machine": {"cores": 2},
        "levels": [
            _level("bge-base-q3-shape", 3, "int8", 40.0),
            _level("bge-base-q4-shape", 4, "fp32", 20.0),
        ],
        "peer": {
            "models": {
                "bge-base-q4-shape": {"texts_per_s": 10.0},
                "bge-reranker-base-shape": {"pairs_per_s": 10.0},
            }
        },
        "rerank": {"engine": {"pairs_per_s": 12.0}},
        "servers": [
            {
                "layout": "1x2",
                "catalog": "shapes",
                "scenarios": [batched | {"batch": 32, "concurrency": 2, "texts_per_s": 19.0}],
                "rerank": [rerank_row | {"concurrency": 4, "texts_per_s": 10.2}],
            }
        ],
    }
    out = report.analyse(result)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for t in out["targets"]:
        by_key.setdefault(t["key"], []).append(t)
    (q3,) = by_key["q3_peer"]
    assert q3["value"] == 4.0 and q3["met"]
    (q4,) = by_key["q4_peer"]
    assert q4["value"] == 2.0 and q4["met"]
    (rr,) = by_key["rerank_peer"]
    assert rr["value"] == pytest.approx(1.2) and not rr["met"] and rr["gap"] == "1.25x short"
    server = {t["where"]: t for t in by_key["server_90"]}
    assert server["shapes:4 1x2 tcp c2"]["met"]  # 19 of 20 texts/s
    assert not server["reranker 1x2 20 docs x c4"]["met"]  # 10.2 of 12 pairs/s
    # With the limit measured (all pairs as one plan), the server is read against it.
    result["rerank"]["limit"] = {"pairs_per_s": 11.0, "pairs": 100, "rounds": 1}
    out = report.analyse(result)
    server = {t["where"]: t for t in out["targets"] if t["key"] == "server_90"}
    assert server["reranker 1x2 20 docs x c4"]["value"] == pytest.approx(10.2 / 11.0)
    assert server["reranker 1x2 20 docs x c4"]["met"]
    (rr,) = [t for t in out["targets"] if t["key"] == "rerank_peer"]
    assert rr["value"] == pytest.approx(1.2), "the peer is compared call by call, as it runs"
    result["rerank"] |= {"query": "q", "doc_tokens": 100, "docs": 100}
    result["rerank"]["engine"] |= {"model": "bge-reranker-base-shape", "calls": {}}
    result["servers"][0]["rerank"][0] |= {"latency_ms": {"p50": 900.0, "p99": 990.0}}
    lines = markdown_server.rerank(result)
    assert any("limit: one plan, all runners | 100 pairs" in line for line in lines), lines
    assert "batched" not in by_key  # the starter's 95 % goal is not this catalog's


needs_torch = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
    reason="torch / transformers missing (make bench installs them)",
)


def _narrow(shape: Shape) -> Shape:
    """The stand-in's architecture, one layer of width 96 (full vocabulary): seconds, not GB."""
    one = with_layers(shape, 1, 30522)
    return replace(one, config=replace(one.config, hidden_size=96, intermediate_size=384))


@needs_torch
def test_the_torch_peers_bf16_twins_stay_close_and_leave_fp32_alone(tmp_path: Path) -> None:
    """bf16 is a cast copy: the FP32 peer keeps FP32 weights (Module.to casts in place), and
    bf16's vectors and logits stay near FP32's without being them."""
    import torch

    from embedder.tools.bench.peer_torch_embed import EmbedPeer, cosines
    from embedder.tools.bench.peer_torch_load import bf16_twin, hf_model, tokenizer
    from embedder.tools.bench.peer_torch_rerank import PairPeer, bf16_check
    from tests import roberta

    shape = _narrow(SHAPES["bge-small"])
    path = tmp_path / "embed.onnx"
    onnx.save(make_shape_model(shape, seed=4), str(path))
    peer = EmbedPeer(hf_model(shape, path), tokenizer(tokenizer_json(), 512), 32)
    half = bf16_twin(EmbedPeer, peer)
    assert next(peer.model.parameters()).dtype == torch.float32
    assert next(half.model.parameters()).dtype == torch.bfloat16
    texts = ["a short text", "music in the garden by the river " * 20, "hello"]
    with torch.inference_mode():
        full, low = peer.encode(texts), half.encode(texts)
    got = cosines(low, full)
    assert 0.99 < got["min_cosine"] < 1.0 and low.shape == full.shape == (3, 96)

    graph = roberta.build_graph(tmp_path / "rerank.onnx", seed=2)
    tok = tokenizer(roberta.build_tokenizer(tmp_path / "tok.json"), 512)
    pairs = PairPeer(hf_model(roberta.tiny_shape(), graph), tok, 32)
    half_pairs = bf16_twin(PairPeer, pairs)
    docs = [roberta.words(n, n) for n in (3, 9, 30, 5)]
    with torch.inference_mode():
        check = bf16_check(pairs, half_pairs, roberta.words(4), docs)
        spread = float(np.ptp(pairs.logits(roberta.words(4), docs)))
    assert next(pairs.model.parameters()).dtype == torch.float32
    assert 0.0 < check["max_abs_diff"] < max(0.05, spread), check


@needs_torch
@pytest.mark.slow
def test_the_shapes_peer_runs_fp32_and_bf16_between_our_rounds(models_root: Path) -> None:
    """On bge-small's stand-in: the check against our FP32 level, then FP32 and bf16 in
    alternate rounds with ours; bf16 capped at one round as on a CPU without BF16 units."""
    from embedder.catalog import SHAPES as CATALOG
    from embedder.store.files import ModelStore
    from embedder.tools.bench.peer_torch_embed import measure_embed

    ModelStore(models_root, CATALOG, offline=True).ensure(CATALOG.get("bge-small-q2-shape"))
    texts = ["a short text", "music in the garden", "hello there", "the stone bridge"]
    got = measure_embed(
        "bge-small",
        "bge-small-q2-shape",
        models_root,
        texts,
        batch=32,
        max_tokens=512,
        rounds=2,
        idle=1,
        seconds=0.0,
        ours=["bge-small-q2-shape"],
        threads=2,
        bf16_rounds=1,
    )
    assert got["check"]["agrees"] and len(got["rounds"]) == 2
    bf16 = got["bf16"]
    assert len(bf16["rounds"]) == 1 and bf16["emulated"] and bf16["texts_per_s"] > 0
    assert 0.99 < bf16["min_cosine"] <= 1.0
    assert bf16["interleaved"]["bge-small-q2-shape"]["ratio"] > 0
    result = {"machine": {"bf16_units": []}, "levels": []}
    lines = markdown_limit.peer(result | {"peer": {"models": {"bge-small-q2-shape": got}}})
    row = next(line for line in lines if line.startswith("| bge-small-q2-shape"))
    assert "**bf16**" in row and "1 round, emulated" in row
    assert "no BF16 units" in "\n".join(lines)


def test_the_limit_table_says_what_was_not_timed() -> None:
    """The shapes bench times lone texts on one thread only: the all-core column says "-",
    not 0.00 ms."""
    level = _level("bge-small-q1-shape", 1, "int8", 80.0)
    level["engine"] |= {"threads": 2, "single_ms_1t": {"0": 14.0, "1": 15.0}}
    result = {"levels": [level], "machine": {"cores": 2}, "options": {"batch": 32}}
    (row,) = [ln for ln in markdown_limit.engine(result) if "shapes:1" in ln]
    assert "| - / 14.50 |" in row, row
