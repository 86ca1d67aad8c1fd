"""falcon.testing clients over a real Service on the starter models."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from embedder.server.http.app import HttpOptions, create_app
from embedder.service import Service


@pytest.fixture(scope="session")
def client(starter_service: Service) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(
        create_app(starter_service, HttpOptions(max_body_bytes=1024 * 1024))
    )


@pytest.fixture(scope="session")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Real bound sockets standing for gunicorn's accepted connections, by listener name."""
    base = Path(tmp_path_factory.mktemp("socks"))
    socks: dict[str, Any] = {}
    for name in ("rest.sock", "rpc.sock", "admin.sock"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(base / name))
        socks[name] = s
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    socks["tcp"] = tcp
    yield socks
    for s in socks.values():
        s.close()


def on(listeners: dict[str, Any], name: str) -> dict[str, Any]:
    return {"gunicorn.socket": listeners[name]}
