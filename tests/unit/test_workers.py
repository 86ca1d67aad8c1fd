"""The worker board: any worker answers for all of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from embedder.catalog import STARTER
from embedder.service import Service
from embedder.store import ModelStore
from embedder.workers import WorkerBoard, combine


def test_combine() -> None:
    assert combine([]) == "starting"
    assert combine(["ok", "starting"]) == "starting"
    assert combine(["ok", "ok"]) == "ok"
    assert combine(["ok", "error"]) == "degraded"
    assert combine(["error", "error"]) == "error"


def test_dead_workers_are_ignored(tmp_path: Path) -> None:
    board = WorkerBoard(tmp_path)
    board.publish({"status": "ok", "models_ready": []})
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
                "models_ready": [],
                "models": {"paraphrase-minilm-l3-v2": "loading"},
            }
        )
    )
    health = svc.health()
    assert health["status"] == "starting"
    assert health["models_ready"] == []
    assert set(health["workers"]) == {str(os.getpid()), str(other)}
    (model,) = svc.models()
    assert model["state"] == "loading" and model["ready"] is False
