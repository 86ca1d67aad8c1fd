"""Where the service listens: its unix sockets and its TCP address (mycelium-aware)."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import pwd
import re
import socket
import stat
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from embedder.settings import Settings

log = logging.getLogger("embedder.server.listeners")

MYCELIUM_NET = ipaddress.ip_network("400::/7")

# What each listener may serve. TCP may face an overlay network with no auth, so it serves only
# the OpenAI REST API and /health unless more is asked for (EMBEDDER_TCP_EXPOSE); each unix
# socket of the socket folder serves its own part.
REST, RPC, ADMIN, METRICS, HEALTH = "rest", "rpc", "admin", "metrics", "health"
SOCKET_SURFACES: dict[str, frozenset[str]] = {
    "rest.sock": frozenset({REST, HEALTH, METRICS}),
    "rpc.sock": frozenset({RPC, HEALTH, METRICS}),
    "admin.sock": frozenset({ADMIN, RPC, REST, HEALTH, METRICS}),
}
SOCKETS = tuple(SOCKET_SURFACES)
TCP_SURFACES = frozenset({REST, HEALTH})
EVERYTHING = frozenset({REST, RPC, ADMIN, METRICS, HEALTH})


@dataclass(frozen=True)
class Listener:
    """A listener as the service treats it: its name (for logs and messages), what it serves,
    and whether EMBEDDER_API_KEY applies on it."""

    name: str
    surfaces: frozenset[str]
    keyed: bool


class ListenerRules:
    """Which listener a socket address is, failing closed.

    Only the three sockets in the socket folder (owner-only, 0700) are trusted, and they are
    known by their full path: a socket elsewhere named `admin.sock` is not one of them. Any
    other address (TCP, a unix socket EMBEDDER_BIND put elsewhere, an abstract or unnamed one)
    is served as TCP is: TCP_SURFACES plus EMBEDDER_TCP_EXPOSE, behind the API key."""

    def __init__(self, socket_dir: Path | None, tcp_expose: Iterable[str] = ()) -> None:
        # Made once: every request asks (embedder.server.http.surfaces).
        self.own: dict[str, Listener] = {}
        if socket_dir is not None:
            self.own = {
                str(socket_dir / n): Listener(n, SOCKET_SURFACES[n], keyed=False) for n in SOCKETS
            }
        self.tcp = TCP_SURFACES | frozenset(tcp_expose)
        self._tcp = Listener("tcp", self.tcp, keyed=True)

    def of(self, address: object) -> Listener:
        """The listener of an address as `getsockname()` gives it, on the listening socket or
        on a connection it accepted (the same path for unix sockets)."""
        if isinstance(address, bytes):
            address = address.decode("utf-8", "replace")
        if isinstance(address, str):
            own = self.own.get(address)
            if own is not None:
                return own
            named = address[:1] not in ("", "\0")  # not unnamed, not abstract
            return Listener(f"unix:{address}" if named else "unix", self.tcp, keyed=True)
        return self._tcp


class ListenError(Exception):
    """The service cannot take its listeners (a live instance owns them, no directory)."""


def prepare_socket_dir(path: Path) -> None:
    """Create the socket directory owner-only (0700): the sockets' own 0660 is a second fence.

    An existing one must be a real directory owned by the service's user: a directory another
    user made could have its sockets swapped by them, and a planted symlink would send our
    chmod and clean-up elsewhere."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ListenError(f"cannot create socket directory {path}: {exc.strerror}") from exc
    _make_dir(path, "socket directory")
    fd = _owned_dir(path, "socket directory")
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


# What the service writes in its state folders: prometheus_client's multiprocess samples
# (counter_<pid>.db, gauge_livesum_<pid>.db, ...) and the worker board (<pid>.json, its
# .<pid>.tmp, `served`). Nothing else there is ours to delete.
_OURS = re.compile(r"^(?:[a-z_]+_\d+\.db|\d+\.json|\.\d+\.tmp|served)$")


def fresh_state_dir(socket_dir: Path, name: str) -> Path:
    """`socket_dir/name` as an owner-only folder for the workers' shared files, wiped of the
    previous run's files. Both folders are opened without following symlinks (the state
    folder relative to the socket directory's descriptor); only files the service writes are
    removed; a folder that is a symlink or another user's is refused."""
    path = socket_dir / name
    parent = _owned_dir(socket_dir, "socket directory")
    try:
        _make_dir(path, "state folder", parent)
        fd = _owned_dir(path, "state folder", parent)
    finally:
        os.close(parent)
    try:
        os.fchmod(fd, 0o700)
        with os.scandir(fd) as entries:
            stale = [
                e.name for e in entries if _OURS.match(e.name) and e.is_file(follow_symlinks=False)
            ]
        for entry in stale:
            os.unlink(entry, dir_fd=fd)
    except OSError as exc:
        raise ListenError(f"cannot clear state folder {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return path


def _make_dir(path: Path, what: str, parent: int | None = None) -> None:
    """mkdir 0700; with `parent`, relative to that directory descriptor."""
    try:
        if parent is None:
            os.mkdir(path, 0o700)
        else:
            os.mkdir(path.name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ListenError(f"cannot create {what} {path}: {exc.strerror}") from exc


def _owned_dir(path: Path, what: str, parent: int | None = None) -> int:
    """A descriptor on `path` (with `parent`: its last component, relative to that directory
    descriptor), refusing a symlink (O_NOFOLLOW), a non-directory, or a directory not owned by
    this process's user."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags) if parent is None else os.open(path.name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            raise ListenError(
                f"{what} {path} is a symbolic link (to {os.readlink(path)}); the service does not "
                "follow links there: remove it, or set PATH_SOCKETS elsewhere"
            ) from exc
        if exc.errno == errno.ENOTDIR:
            raise ListenError(f"{what} {path} exists and is not a directory; remove it") from exc
        raise ListenError(f"cannot open {what} {path}: {exc.strerror}") from exc
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid != me:
        os.close(fd)
        raise ListenError(
            f"{what} {path} is owned by {_user(st.st_uid)}, not by the service's user "
            f"{_user(me)}: its owner could replace the sockets in it. Remove it, or set "
            "PATH_SOCKETS to a directory of your own"
        )
    return fd


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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
