"""OpenVINO runs on a grid of shapes: its CPU plugin keeps what it built for every input
shape it ran (a worker fed free shapes grew with each new one: docs/openvino.md), so the
encoders pad each sub-batch to the grid's next rows and length, and the plan prices that.
Here: the session is only ever given grid shapes, and the padding changes no result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.planning import OPENVINO_GRID, RunLimits
from embedder.reranker import CrossEncoderReranker, Doc, PairScorer
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer
from tests import cross_encoder_graph as ceg
from tests.models import tokenizer_json
from tests.unit.test_reranker import SPEC as CROSS_ENCODER

ov = pytest.importorskip("embedder.backends.openvino")
pytest.importorskip("openvino")

MINILM = STARTER.get("all-minilm-l6-v2")
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 90)))) for _ in range(n)]


def _recording(session: Any) -> list[tuple[int, int]]:
    """The (rows, length) of every run the session is given."""
    shapes: list[tuple[int, int]] = []
    run = session.run

    def recorded(outputs: list[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        rows, length = feeds["input_ids"].shape
        shapes.append((rows, length))
        result: list[Any] = run(outputs, feeds)
        return result

    session.run = recorded
    return shapes


def _on_grid(shapes: list[tuple[int, int]], window: int) -> bool:
    lengths = set(OPENVINO_GRID.lengths) | {window}
    return all(r in OPENVINO_GRID.rows and n in lengths for r, n in shapes)


def test_an_openvino_encoder_runs_grid_shapes_only_and_pads_nothing_into_its_vectors(
    starter_service: Service,
) -> None:
    starter_store = starter_service.store  # the files built
    assert MINILM.onnx and MINILM.tokenizer
    graph = starter_store.path(MINILM, MINILM.onnx)
    tok = load_tokenizer(starter_store.path(MINILM, MINILM.tokenizer), MINILM.max_tokens)
    session = ov.open_openvino(graph, SessionConfig(threads=2), "fp32")
    encoder = TextEncoder(MINILM, session, tok, RunLimits())
    assert encoder.limits.grid is OPENVINO_GRID and encoder.limits.window == MINILM.max_tokens
    shapes = _recording(session)
    texts = [*_texts(45, seed=1), "one", "two words"]
    got = encoder.embed(texts).vectors
    lone = [encoder.embed([t]).vectors[0] for t in texts[:5]]
    assert shapes and _on_grid(shapes, MINILM.max_tokens), shapes
    assert any(n > len(t.split()) + 2 for (_, n), t in zip(shapes[-5:], texts[:5], strict=True))
    ref = TextEncoder(MINILM, open_session(graph, SessionConfig(threads=2)), tok, RunLimits())
    assert ref.limits.grid is None  # ONNX Runtime runs the plan's own shapes
    want = ref.embed(texts).vectors
    assert float(np.min(np.sum(got * want, axis=1))) >= 0.99999
    assert float(np.min(np.sum(np.array(lone) * want[:5], axis=1))) >= 0.99999


def test_an_openvino_cross_encoder_pads_rows_and_keeps_only_its_own_scores(
    tmp_path: Path,
) -> None:
    tok = load_tokenizer(tokenizer_json(), CROSS_ENCODER.max_tokens)
    path = tmp_path / "model.onnx"
    ceg.build(path, tok.get_vocab_size())
    session = ov.open_openvino(path, SessionConfig(), "fp32")
    limits = RunLimits(max_batch=32, max_batch_tokens=4096)
    on_grid = CrossEncoderReranker(PairScorer(CROSS_ENCODER, session, tok, tok, limits))
    shapes = _recording(session)
    free = CrossEncoderReranker(
        PairScorer(CROSS_ENCODER, open_session(path, SessionConfig()), tok, tok, limits)
    )
    docs = [Doc(str(i), t) for i, t in enumerate(_texts(5, seed=2))]
    got = on_grid.rerank("a fox and a dog", docs)
    want = free.rerank("a fox and a dog", docs)
    assert [r.id for r in got.results] == [r.id for r in want.results]
    np.testing.assert_allclose(
        [r.score for r in got.results], [r.score for r in want.results], atol=1e-5
    )
    assert shapes and _on_grid(shapes, CROSS_ENCODER.max_tokens), shapes
    # five short pairs in one run (as a plan may make of short texts): six rows run
    tok_pairs = on_grid.scorer.tokenize("fox", docs)
    rows = np.arange(5)
    scores = on_grid.scorer.run_rows(tok_pairs, rows)
    assert shapes[-1][0] == 6 and scores.shape == (5, 1)
    np.testing.assert_allclose(scores, free.scorer.run_rows(tok_pairs, rows), atol=1e-5)


# A child process: the model on OpenVINO behind its encoder, three blocks of random requests
# (1-40 texts of 1 to the window's tokens), RSS after each block once the compiled model's
# batch memory is released and malloc trimmed (as a worker's idle trim does).
_BLOCKS = """
import json, sys
from pathlib import Path
import numpy as np, psutil
from embedder.backends import openvino as ov
from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.memory import libc_trim, limit_arenas
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from embedder.tokens import load_tokenizer
limit_arenas(2)
store = ModelStore(Path(sys.argv[1]), STARTER, offline=True)
spec = STARTER.get(sys.argv[2])
tok = load_tokenizer(store.path(spec, spec.tokenizer), spec.max_tokens)
session = ov.open_openvino(store.path(spec, spec.onnx), SessionConfig(), "fp32")
encoder = TextEncoder(spec, session, tok, RunLimits())
words = ["tea", "river", "stone", "quiet", "lamp", "north", "paper", "cloud"]
rng = np.random.default_rng(0)
trim, rss = libc_trim(), []
for block in range(3):
    for _ in range(50):
        size = int(rng.integers(1, 40))
        encoder.embed([" ".join(rng.choice(words, size=int(rng.integers(1, spec.max_tokens))))
                       for _ in range(size)])
    session.compiled.release_memory()
    trim()
    rss.append(psutil.Process().memory_info().rss / 2**20)
print(json.dumps({"rss_mib": rss, "grid": encoder.limits.grid is not None}))
"""


@pytest.mark.slow
def test_a_worker_on_openvino_levels_off_under_random_batches(starter_service: Service) -> None:
    """The memory the grid is for, in a fresh process: once the first block of random requests
    has run most of the grid's shapes, more blocks add next to nothing. On free shapes the
    same blocks read 310 / 334 / 345 MiB (paraphrase-MiniLM-L3, 2026-12-07, AMD EPYC Zen 4):
    +34 MiB, and on for as long as new shapes come; on the grid 239 / 239 / 240."""
    model = "paraphrase-minilm-l3-v2"
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKS, str(starter_service.store.root), model],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    first, *_, last = got["rss_mib"]
    assert got["grid"] and last - first <= 10, got
