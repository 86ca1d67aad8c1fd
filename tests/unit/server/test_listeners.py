"""Listeners: the mycelium probe against a stand-in node API, and socket claiming."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from embedder.server.listeners import (
    ListenError,
    binds,
    claim_socket,
    fresh_state_dir,
    prepare_socket_dir,
    tcp_bind,
)
from embedder.settings import Settings
from tests.polling import PATIENCE


def _node(
    answer: dict[str, Any] | None, hold: threading.Event | None = None
) -> Generator[str, None, None]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if hold is not None:
                hold.wait(PATIENCE)  # a node that hangs until the test lets it go
            if self.path != "/api/v1/admin" or answer is None:
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Node(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            """A hung node answers after the service gave up on it: a broken pipe is the
            expected end of that test, not noise for the log."""
            if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                super().handle_error(request, client_address)

    server = Node(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def node_v078() -> Iterator[str]:
    yield from _node({"nodeSubnet": "5a1:2b3::/64", "nodeIp": "5a1:2b3::1", "nodePubkey": "ab"})


@pytest.fixture
def node_old() -> Iterator[str]:
    yield from _node({"nodeSubnet": "5a1:2b3::/64", "nodePubkey": "ab"})


HANGING = threading.Event()


@pytest.fixture
def node_slow() -> Iterator[str]:
    HANGING.clear()
    yield from _node({"nodeIp": "5a1:2b3::1"}, hold=HANGING)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_mycelium_node_ip_is_used(node_v078: str) -> None:
    assert tcp_bind(Settings(mycelium_api=node_v078)) == "[5a1:2b3::1]:8092"


def test_older_node_falls_back_to_the_tun_address(
    node_old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    addr = SimpleNamespace(family=socket.AF_INET6, address="5a1:2b3::7%mycelium")
    other = SimpleNamespace(family=socket.AF_INET6, address="fe80::1")
    monkeypatch.setattr(
        "embedder.server.listeners.psutil.net_if_addrs",
        lambda: {"eth0": [other], "mycelium": [addr]},
    )
    assert tcp_bind(Settings(mycelium_api=node_old)) == "[5a1:2b3::7]:8092"


def test_older_node_without_tun_gives_loopback(
    node_old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("embedder.server.listeners.psutil.net_if_addrs", lambda: {})
    assert tcp_bind(Settings(mycelium_api=node_old)) == "127.0.0.1:8092"


def test_no_node_gives_loopback_never_all_interfaces() -> None:
    assert tcp_bind(Settings(mycelium_api=_closed_port())) == "127.0.0.1:8092"


def test_a_hanging_node_does_not_hang_the_start(node_slow: str) -> None:
    # The node answers only once released below: the probe must give up on its own.
    assert tcp_bind(Settings(mycelium_api=node_slow)) == "127.0.0.1:8092"
    assert not HANGING.is_set(), "the node was released before the probe returned"


def test_overlay_addresses_only(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _node({"nodeIp": "2001:db8::1"})  # not in 400::/7
    url = next(gen)
    monkeypatch.setattr("embedder.server.listeners.psutil.net_if_addrs", lambda: {})
    try:
        assert tcp_bind(Settings(mycelium_api=url)) == "127.0.0.1:8092"
    finally:
        gen.close()


def test_explicit_bind_wins_and_empty_turns_tcp_off(node_v078: str) -> None:
    assert tcp_bind(Settings(bind="127.0.0.1:9999", mycelium_api=node_v078)) == "127.0.0.1:9999"
    assert tcp_bind(Settings(bind="", mycelium_api=node_v078)) is None


def test_binds_lists_three_sockets_then_tcp(tmp_path: Path) -> None:
    out = binds(Settings(socket_dir=tmp_path, bind="127.0.0.1:1234"))
    assert out == [
        f"unix:{tmp_path / 'rest.sock'}",
        f"unix:{tmp_path / 'rpc.sock'}",
        f"unix:{tmp_path / 'admin.sock'}",
        "127.0.0.1:1234",
    ]


def test_socket_dir_is_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "a" / "hero_embedder_provider"
    prepare_socket_dir(d)
    assert d.stat().st_mode & 0o777 == 0o700
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ListenError, match="cannot create socket directory"):
        prepare_socket_dir(blocker / "sub")


def test_claim_socket(tmp_path: Path) -> None:
    path = tmp_path / "rest.sock"
    claim_socket(path)  # nothing there
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    claim_socket(path)  # stale: left for gunicorn to replace
    live = socket.socket(socket.AF_UNIX)
    path.unlink()
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(ListenError, match="another instance is serving"):
            claim_socket(path)
    finally:
        live.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ListenError, match="not a socket"):
        claim_socket(path)


# Issue 15 item 6: the socket directory and its state folders are the service's own.
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@as_root
def test_a_socket_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "hero_embedder_provider"
    d.mkdir()
    d.chmod(0o777)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(ListenError, match=r"owned by .*uid 65534.*PATH_SOCKETS"):
        prepare_socket_dir(d)
    st = d.stat()
    assert st.st_uid == NOBODY and st.st_mode & 0o777 == 0o777  # left as found


def test_a_symlinked_socket_dir_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / ".metrics").mkdir(parents=True)
    (victim / ".metrics" / "counter_1.db").write_text("theirs")
    victim.chmod(0o755)
    link = tmp_path / "sockets" / "hero_embedder_provider"
    link.parent.mkdir()
    link.symlink_to(victim)
    with pytest.raises(ListenError, match="symbolic link"):
        prepare_socket_dir(link)
    with pytest.raises(ListenError, match="symbolic link"):
        fresh_state_dir(link, ".metrics")  # even if called alone: the link is not followed
    assert victim.stat().st_mode & 0o777 == 0o755
    assert (victim / ".metrics" / "counter_1.db").read_text() == "theirs"


@as_root
def test_a_foreign_state_folder_is_refused_and_its_files_survive(tmp_path: Path) -> None:
    prepare_socket_dir(tmp_path)
    foreign = tmp_path / ".metrics"
    foreign.mkdir()
    (foreign / "counter_1.db").write_text("theirs")
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(ListenError, match="owned by"):
        fresh_state_dir(tmp_path, ".metrics")
    assert (foreign / "counter_1.db").read_text() == "theirs"


def test_state_folders_lose_only_the_service_files(tmp_path: Path) -> None:
    ours = [
        "counter_12.db",
        "gauge_livesum_12.db",
        "histogram_3.db",
        "12.json",
        ".12.tmp",
        "served",
    ]
    d = fresh_state_dir(tmp_path, ".metrics")
    for name in ours:
        (d / name).write_text("stale")
    (d / "notes.txt").write_text("keep")
    (d / "sub").mkdir()
    (d / "99.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("keep")
    assert fresh_state_dir(tmp_path, ".metrics") == d
    assert sorted(p.name for p in d.iterdir()) == ["99.json", "notes.txt", "sub"]
    assert (tmp_path / "elsewhere.json").read_text() == "keep"
    assert d.stat().st_mode & 0o777 == 0o700
    link = tmp_path / ".workers"
    link.symlink_to(d)
    with pytest.raises(ListenError, match="symbolic link"):
        fresh_state_dir(tmp_path, ".workers")
