"""The service's request path: one model resolution, one pipeline through the model's
micro-batcher, `dimensions` as engine maths, and the request limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedder import work
from embedder.catalog import STARTER, Catalog
from embedder.encoder import shorten
from embedder.errors import ClientGone, InvalidInput
from embedder.reranker import Doc
from embedder.service import Service
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore

MODEL = "paraphrase-minilm-l3-v2"
PREFIX = "Represent this sentence for searching relevant passages: "
TEXTS = ["a cat sits on the mat", "tax law in the EU", "x"]


def _instructed() -> Catalog:
    """The starter catalog with a BGE-style query instruction on one model."""
    models = tuple(
        replace(m, query_instruction=PREFIX) if m.id == MODEL else m for m in STARTER.models
    )
    return Catalog("instructed", models, STARTER.aliases)


@pytest.fixture(scope="module")
def service(models_root: Path) -> Iterator[Service]:
    catalog = _instructed()
    store = ModelStore(models_root, catalog, offline=True)
    svc = Service(
        catalog,
        store,
        session_config=SessionConfig(threads=2),
        models=[MODEL],
    )
    svc.load_all()
    assert svc.state() == "ok", svc.health()
    yield svc
    svc.stop()


def test_the_runner_is_the_model_s_batcher(service: Service) -> None:
    assert service.loader.embeddings[MODEL].runner is service.batchers[MODEL]


def test_query_instruction_is_applied_once(service: Service) -> None:
    spec = service.resolve(MODEL)
    as_query = service.embed(TEXTS, spec, query=True)
    prefixed = service.embed([PREFIX + t for t in TEXTS], spec)
    np.testing.assert_allclose(as_query.vectors, prefixed.vectors, atol=1e-6)
    assert as_query.tokens == prefixed.tokens
    plain = service.embed(TEXTS, spec)
    assert float(np.min(np.sum(plain.vectors * as_query.vectors, axis=1))) < 0.999


def test_dimensions_truncates_and_renormalises(service: Service) -> None:
    spec = service.resolve(MODEL)
    full = service.embed(TEXTS, spec)
    short = service.embed(TEXTS, spec, dimensions=64)
    assert short.vectors.shape == (3, 64)
    np.testing.assert_allclose(short.vectors, shorten(full.vectors, 64), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(short.vectors, axis=1), 1.0, atol=1e-5)
    same = service.embed(TEXTS, spec, dimensions=spec.dims)
    np.testing.assert_array_equal(same.vectors, full.vectors)


@pytest.mark.parametrize("bad", [0, -1, 385, 1.5, "64", True])
def test_dimensions_out_of_range_is_refused_before_work(service: Service, bad: object) -> None:
    spec = service.resolve(MODEL)
    with pytest.raises(InvalidInput) as err:
        service.embed(TEXTS, spec, dimensions=bad)
    assert err.value.param == "dimensions"


def test_resolve_by_quality_model_or_default(tmp_path: Path) -> None:
    svc = Service(STARTER, ModelStore(tmp_path, STARTER, offline=True))  # nothing loaded
    assert svc.resolve(quality=2).level == 2
    assert svc.resolve("text-embedding-3-small") == STARTER.get("text-embedding-3-small")
    assert svc.resolve() == STARTER.default_embedding()
    level2 = svc.resolve(quality=2)
    assert svc.resolve(level2.id, quality=2) == level2
    with pytest.raises(InvalidInput, match="send one of them"):
        svc.resolve(svc.resolve(quality=1).id, quality=2)
    for bad in (0, 5, "2", True):
        with pytest.raises(InvalidInput):
            svc.resolve(quality=bad)
    reranker = next(s for s in STARTER if s.kind == "rerank")
    with pytest.raises(InvalidInput, match="not an embedding model"):
        svc.resolve(reranker.id)


def test_a_gone_client_gets_no_work(starter_service: Service) -> None:
    spec = starter_service.resolve(MODEL)
    gone = work.Request(gone=lambda: True)
    with work.serving(gone), pytest.raises(ClientGone):
        starter_service.embed(TEXTS, spec)
    with work.serving(gone), pytest.raises(ClientGone):
        starter_service.rerank("q", [Doc("a", "a doc")])
