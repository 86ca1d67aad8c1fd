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
def socket_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The socket folder the apps here are told of: `listeners` binds its sockets there."""
    return Path(tmp_path_factory.mktemp("socks"))


@pytest.fixture(scope="session")
def client(starter_service: Service, socket_dir: Path) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(
        create_app(starter_service, HttpOptions(max_body_bytes=1024 * 1024, socket_dir=socket_dir))
    )


@pytest.fixture(scope="session")
def listeners(socket_dir: Path) -> Iterator[dict[str, Any]]:
    """Real bound sockets standing for gunicorn's accepted connections, by listener name: the
    service's three in `socket_dir`, TCP, and a unix socket elsewhere that is named like one
    of the three (as EMBEDDER_BIND could put it)."""
    socks: dict[str, Any] = {}
    for name in ("rest.sock", "rpc.sock", "admin.sock"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(socket_dir / name))
        socks[name] = s
    elsewhere = socket_dir.parent / f"{socket_dir.name}-elsewhere"
    elsewhere.mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(elsewhere / "admin.sock"))
    socks["elsewhere/admin.sock"] = s
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    socks["tcp"] = tcp
    yield socks
    for s in socks.values():
        s.close()


def on(listeners: dict[str, Any], name: str) -> dict[str, Any]:
    return {"gunicorn.socket": listeners[name]}
