"""Where the service listens: its unix sockets and its TCP address (mycelium-aware)."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket
import stat
import urllib.request
from pathlib import Path

import psutil

from embedder.settings import Settings

log = logging.getLogger("embedder.listen")

SOCKETS = ("rest.sock", "rpc.sock", "admin.sock")
MYCELIUM_NET = ipaddress.ip_network("400::/7")


class ListenError(Exception):
    """The service cannot take its listeners (a live instance owns them, no directory)."""


def prepare_socket_dir(path: Path) -> None:
    """Create the socket directory owner-only (0700): the sockets' own 0660 is a second fence."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise ListenError(f"cannot create socket directory {path}: {exc.strerror}") from exc


def claim_socket(path: Path) -> None:
    """Refuse to start if a live server answers on `path`; a stale file is left for gunicorn,
    which removes any existing socket file at bind without looking."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("replacing stale socket %s", path)
            return
        raise ListenError(f"cannot check {path}: {exc.strerror}") from exc
    finally:
        probe.close()
    raise ListenError(
        f"another instance is serving on {path}; stop it first or set PATH_SOCKETS elsewhere"
    )


def mycelium_address(api: str, timeout: float = 1.0) -> str | None:
    """The local mycelium node's overlay address, or None (no node, or no answer in time).

    mycelium 0.7.8+ reports `nodeIp`; older nodes only `nodeSubnet`, so then the address is
    the one in 400::/7 on the `mycelium` TUN interface.
    """
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/api/v1/admin", timeout=timeout) as resp:
            info = json.loads(resp.read(64 * 1024))
    except (OSError, ValueError):
        return None
    node_ip = info.get("nodeIp") if isinstance(info, dict) else None
    if isinstance(node_ip, str) and _in_overlay(node_ip):
        return node_ip
    return _tun_address()


def _in_overlay(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]) in MYCELIUM_NET
    except ValueError:
        return False


def _tun_address() -> str | None:
    for name, addrs in psutil.net_if_addrs().items():
        if name != "mycelium":
            continue
        for a in addrs:
            if a.family == socket.AF_INET6 and _in_overlay(a.address):
                return str(a.address.split("%", 1)[0])
    return None


def tcp_bind(settings: Settings) -> str | None:
    """EMBEDDER_BIND if set ('' turns TCP off); else the mycelium address, else loopback."""
    if settings.bind is not None:
        return settings.bind or None
    overlay = mycelium_address(settings.mycelium_api)
    if overlay:
        log.info("mycelium node found: listening on its overlay address %s", overlay)
        return f"[{overlay}]:{settings.port}"
    return f"127.0.0.1:{settings.port}"


def binds(settings: Settings) -> list[str]:
    """gunicorn `bind` entries: the three unix sockets, then TCP if any."""
    out = [f"unix:{settings.socket_dir / name}" for name in SOCKETS]
    tcp = tcp_bind(settings)
    if tcp:
        out.append(tcp)
    return out
