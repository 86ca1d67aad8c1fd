"""One copy of each model per worker: the runners of a model share one session, so a worker's
memory after load does not grow with its cores. RSS is a memory fact, not a speed fact:
asserted with a margin, each layout in a fresh process. Measured after load, as the goal
says: after a request balanced over 16 idle runners, 16 concurrent runs hold 16 sets of
activations (+16 % seen under load), which is batch memory, not copies of the model."""

from __future__ import annotations

from typing import Any

import pytest

from embedder.batcher import Batcher
from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.loading import Opener
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from tests.memory_probe import model_memory

# A worker's runners, as the service opens them before any model.
SETUP = """
from embedder.loading import Opener
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig, open_session
opener = Opener(store, SessionConfig(threads=runners), RunLimits())
"""
# As the service opens it: sessions opened, runners started.
SHARED = """
sessions = {id(e.session) for e in opener.embedding(STARTER.get(model)).runner._engines}
facts = {"sessions": len(sessions)}
"""
# What a session per runner would hold (the layout before), opened here.
PRIVATE = """
spec = STARTER.get(model)
kept = [open_session(store.path(spec, spec.onnx), SessionConfig()) for _ in range(runners)]
facts = {"sessions": len({id(s) for s in kept})}
"""


def _model_memory(store: ModelStore, model: str, runners: int, shared: bool) -> dict[str, Any]:
    """The least of 3 fresh processes, each read after the trim a worker makes once idle
    (`model_memory`)."""
    load = SHARED if shared else PRIVATE
    return model_memory(store.root, model, runners, setup=SETUP, load=load, tries=3)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["all-minilm-l6-v2", "all-minilm-l6-v2-int8"])
def test_model_memory_does_not_grow_with_runners(starter_store: ModelStore, model: str) -> None:
    starter_store.ensure(STARTER.get(model))
    one = _model_memory(starter_store, model, 1, shared=True)
    many = _model_memory(starter_store, model, 16, shared=True)
    assert one["sessions"] == many["sessions"] == 1
    assert many["model_bytes"] <= 1.10 * one["model_bytes"], (one, many)


@pytest.mark.slow
def test_private_sessions_would_grow_with_runners(starter_store: ModelStore) -> None:
    """The probe can see the difference: 4 sessions of the model, one per runner (which the
    service no longer opens), hold clearly more than the one the service shares."""
    model = "all-minilm-l6-v2"
    starter_store.ensure(STARTER.get(model))
    shared = _model_memory(starter_store, model, 4, shared=True)
    private = _model_memory(starter_store, model, 4, shared=False)
    assert private["sessions"] == 4
    assert private["model_bytes"] >= 1.5 * shared["model_bytes"], (shared, private)


def test_runners_share_one_single_thread_encoder(starter_store: ModelStore) -> None:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    starter_store.ensure(spec)
    opener = Opener(starter_store, SessionConfig(threads=3), RunLimits())
    embedding = opener.embedding(spec)
    batcher, encoder = embedding.runner, embedding.encoder
    assert isinstance(batcher, Batcher) and isinstance(encoder, TextEncoder)
    assert batcher._engines == [encoder] * 3
    assert encoder.session.inner.get_session_options().intra_op_num_threads == 1
