"""Real BGE weights, whenever they are present in the models root (they cannot be downloaded
on machines without the Hub; `embedder models pull` on one that has it, then copy the root)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from embedder.catalog import BGE
from embedder.reranker import Doc
from embedder.service import Service
from embedder.settings import Settings
from embedder.store.files import ModelStore

ROOT = Settings.from_env(os.environ).models_root
STORE = ModelStore(ROOT, BGE, offline=True)
PRESENT = [s.id for s in BGE if not s.files or not STORE.missing(s)]
QUERY = "What is the capital of France?"
DOCS = [
    Doc("bananas", "Bananas are a good source of potassium."),
    Doc("paris", "Paris is the capital and most populous city of France."),
    Doc("stocks", "The stock market closed higher on Friday."),
]


@pytest.fixture(scope="module")
def bge() -> Service:
    if not PRESENT:
        pytest.skip(f"no BGE model files in {ROOT}")
    service = Service(BGE, STORE, models=PRESENT)
    service.load_all()
    return service


@pytest.mark.parametrize("model_id", [s.id for s in BGE.embedding_models()])
def test_bge_embeddings(bge: Service, model_id: str) -> None:
    if model_id not in PRESENT:
        pytest.skip(f"{model_id} is not in {ROOT}")
    spec = bge.resolve(model_id)
    out = bge.embed(["a cat sits on the mat", "a kitten rests on a rug", "tax law"], spec)
    assert out.vectors.shape == (3, spec.dims)
    sims = out.vectors @ out.vectors.T
    assert sims[0, 1] > sims[0, 2]
    q = bge.embed([QUERY], bge.resolve(model_id), query=True)
    d = bge.embed([DOCS[1].text, DOCS[0].text], bge.resolve(model_id))
    assert float(q.vectors[0] @ d.vectors[0]) > float(q.vectors[0] @ d.vectors[1])
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_bge_reranker(bge: Service) -> None:
    if "bge-reranker-base" not in PRESENT:
        pytest.skip(f"bge-reranker-base is not in {ROOT}")
    _, ranking = bge.rerank(QUERY, DOCS, model="bge-reranker-base")
    assert ranking.results[0].id == "paris"
    assert 0.0 <= ranking.results[-1].score <= ranking.results[0].score <= 1.0
