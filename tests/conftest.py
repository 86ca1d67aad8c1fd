"""Shared fixtures: one models root per test session, built once from the shipped weights."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder.backends import openvino as ov
from embedder.catalog import STARTER
from embedder.service import Service
from embedder.sessions import SessionConfig, disable_ort_telemetry
from embedder.store.files import ModelStore

disable_ort_telemetry()  # the test process's set-up: before any test imports onnxruntime


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root shared by the whole session. EMBEDDER_TEST_MODELS_ROOT keeps the built
    starter files between local runs (CI starts empty and builds them once)."""
    keep = os.environ.get("EMBEDDER_TEST_MODELS_ROOT")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def starter_store(models_root: Path) -> ModelStore:
    return ModelStore(models_root, STARTER, offline=True)


@pytest.fixture(scope="session")
def starter_service(starter_store: ModelStore) -> Iterator[Service]:
    """Every starter model loaded, as a worker would have them."""
    service = Service(STARTER, starter_store, session_config=SessionConfig(threads=2))
    service.load_all()
    assert service.state() == "ok", service.health()
    yield service


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As where the package is not installed: `import openvino` fails."""
    ov._core.cache_clear()
    monkeypatch.setitem(sys.modules, "openvino", None)
    yield
    ov._core.cache_clear()
