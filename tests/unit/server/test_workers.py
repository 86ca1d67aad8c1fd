"""The worker board: any worker answers for all of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from embedder.catalog import STARTER
from embedder.health import combine
from embedder.server.workers import WorkerBoard
from embedder.service import Service
from embedder.store.files import ModelStore
from tests.polling import wait_until


def test_combine() -> None:
    assert combine([]) == "starting"
    assert combine(["ok", "starting"]) == "starting"
    assert combine(["ok", "ok"]) == "ok"
    assert combine(["ok", "error"]) == "degraded"
    assert combine(["error", "error"]) == "error"


def test_dead_workers_are_ignored(tmp_path: Path) -> None:
    board = WorkerBoard(tmp_path)
    board.publish({"status": "ok", "models_ready": True, "models_loaded": []})
    (tmp_path / "999999999.json").write_text(json.dumps({"status": "starting"}))
    assert list(board.read()) == [os.getpid()]


def test_service_health_waits_for_every_worker(tmp_path: Path, starter_store: ModelStore) -> None:
    board = WorkerBoard(tmp_path)
    svc = Service(STARTER, starter_store, models=["paraphrase-minilm-l3-v2"], board=board)
    svc.load_all()
    assert svc.health()["status"] == "ok"
    other = os.getppid()  # a live process standing for a second worker still loading
    (tmp_path / f"{other}.json").write_text(
        json.dumps(
            {
                "status": "starting",
                "models_ready": False,
                "models_loaded": [],
                "models": {"paraphrase-minilm-l3-v2": "loading"},
            }
        )
    )
    health = svc.health()
    assert health["status"] == "starting"
    assert health["models_ready"] is False and health["models_loaded"] == []
    assert set(health["workers"]) == {str(os.getpid()), str(other)}
    (model,) = svc.models()
    assert model["state"] == "loading" and model["ready"] is False


def test_failed_downloads_are_retried_in_the_background(tmp_path: Path) -> None:
    """The Hub may come back: a model whose files could not be fetched is tried again."""
    from embedder.catalog import Catalog, HubFile, ModelFile, ModelSpec

    spec = ModelSpec(
        id="remote",
        kind="embedding",
        description="a model whose Hub is unreachable",
        source="x/y@0",
        files=(ModelFile("model.onnx", HubFile("x/y", "0" * 40, "model.onnx")),),
        max_tokens=8,
        precision="fp32",
        onnx="model.onnx",
        tokenizer="model.onnx",
    )
    cat = Catalog(name="t", models=(spec,))
    svc = Service(cat, ModelStore(tmp_path, cat, offline=True))
    svc.loader.retry_first = 0.05
    attempts: list[float] = []
    original = svc.store.ensure

    def counting(s: ModelSpec) -> None:
        attempts.append(1)
        original(s)

    svc.store.ensure = counting  # type: ignore[method-assign, assignment]
    svc.start()
    try:
        # An attempt under way shows the model starting again: wait for the third to end.
        wait_until(
            "three download attempts, the last one failed",
            lambda: len(attempts) >= 3 and svc.health()["status"] == "error",
        )
        assert "remote" in svc.health()["errors"]
    finally:
        svc.stop()
