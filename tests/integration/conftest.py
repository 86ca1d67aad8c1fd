from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder.service import Service
from tests.integration import server as srv


@pytest.fixture(scope="session")
def built_root(models_root: Path, starter_service: Service) -> Path:
    """The models root with every starter file built (by the in-process service)."""
    return models_root


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, built_root: Path) -> Iterator[srv.Server]:
    """One real gunicorn (2 workers, 3 unix sockets + loopback TCP) for the session."""
    server = srv.start(tmp_path_factory.mktemp("live"), built_root, workers=2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
