"""The client needs only the socket root: a server setting it cannot parse is not its concern."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.client import Client


def test_default_socket_ignores_the_servers_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH_SOCKETS", str(tmp_path))
    monkeypatch.setenv("EMBEDDER_WORKERS", "not-a-number")
    monkeypatch.setenv("EMBEDDER_LOG_LEVEL", "loud")
    client = Client()
    assert client.socket_path == tmp_path / "hero_embedder_provider" / "rpc.sock"
