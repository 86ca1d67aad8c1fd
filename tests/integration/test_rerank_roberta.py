"""Rerank at 512 tokens with XLM-RoBERTa's special tokens, end to end: a live gunicorn serves
a catalog file whose cross-encoders are an XLM-R-shaped graph (514 positions, padding-offset
ids) with an XLM-R-style tokenizer.json (`tests.roberta`), placed in the models root as a
download would leave them; long queries and documents go through REST and JSON-RPC."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from tests import roberta
from tests.integration import server as srv
from tests.roberta import words

pytestmark = pytest.mark.integration

WINDOW = 512
MODELS: dict[str, roberta.PostProcessor] = {
    "xlmr-tiny-roberta": "roberta",
    "xlmr-tiny-template": "xlmr-template",
}
LONG_DOCS = [words(600 + i, start=i) for i in range(20)]  # 20 different texts
SHORT_DOCS = ["apple", "river stone music", words(40, start=5)]
DOCS = LONG_DOCS[:10] + SHORT_DOCS + LONG_DOCS[10:]


def _catalog(path: Path) -> Path:
    entries = [
        f"""
[[models]]
id = "{model}"
kind = "rerank"
repo = "tests/{model}"
revision = "{"0" * 40}"
onnx = "model.onnx"
tokenizer = "tokenizer.json"
max_tokens = {WINDOW}
description = "XLM-R-shaped test cross-encoder, RANDOM WEIGHTS ({kind} post-processor)"
"""
        for model, kind in MODELS.items()
    ]
    path.write_text('name = "xlmr-test"\n' + "".join(entries), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[srv.Server, Path]]:
    """One worker, one core; the files where the store would have downloaded them."""
    tmp = tmp_path_factory.mktemp("xlmr")
    root, graph = tmp / "models", roberta.build_graph(tmp / "model.onnx")
    for model, kind in MODELS.items():
        (root / model).mkdir(parents=True)
        os.link(graph, root / model / "model.onnx")
        roberta.build_tokenizer(root / model / "tokenizer.json", kind)
    server = srv.start(tmp, root, catalog=str(_catalog(tmp / "xlmr.toml")), workers=1, tcp=False)
    try:
        server.wait_ready()
        yield server, root
    finally:
        server.stop()


def _window_tokens(tokenizer: Path, query: str, docs: list[str]) -> int:
    """Tokens the pairs hold after truncation: a pair over the window is cut to exactly it."""
    tok = Tokenizer.from_file(str(tokenizer))
    return sum(min(WINDOW, len(tok.encode(query, d).ids)) for d in docs)


def _check_ranking(scores: list[float], indexes: list[int]) -> None:
    assert sorted(indexes) == list(range(len(DOCS)))
    assert all(math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("query_words", [100, 300])  # the query whole / cut with the doc
def test_rest_rerank_long_pairs(
    xlmr: tuple[srv.Server, Path], model: str, query_words: int
) -> None:
    server, root = xlmr
    query = words(query_words, start=3)
    status, body = server.json(
        "rest.sock", "POST", "/v1/rerank", {"model": model, "query": query, "documents": DOCS}
    )
    assert status == 200, body
    results: list[dict[str, Any]] = body["results"]
    _check_ranking([r["relevance_score"] for r in results], [r["index"] for r in results])
    want = _window_tokens(root / model / "tokenizer.json", query, DOCS)
    assert body["usage"]["total_tokens"] == want
    assert want == 20 * WINDOW + sum(query_words + len(d.split()) + 4 for d in SHORT_DOCS)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_rpc_rerank_long_pairs_scores_as_rest(xlmr: tuple[srv.Server, Path], model: str) -> None:
    server, _ = xlmr
    query = words(300, start=1)
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)]
    reply = server.rpc("rerank", {"model": model, "query": query, "docs": docs})
    assert "error" not in reply, reply
    ranked: list[dict[str, Any]] = reply["result"]
    _check_ranking([r["score"] for r in ranked], [r["index"] for r in ranked])
    assert all(r["id"] == f"d{r['index']}" for r in ranked)
    status, body = server.json(
        "rest.sock", "POST", "/v1/rerank", {"model": model, "query": query, "documents": DOCS}
    )
    assert status == 200, body
    rest = {r["index"]: r["relevance_score"] for r in body["results"]}
    for r in ranked:
        assert r["score"] == pytest.approx(rest[r["index"]], abs=1e-6)
