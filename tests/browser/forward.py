"""A loopback TCP -> unix socket forwarder: what `ssh -L 8093:/path/admin.sock host` gives a user.

Bounded: at most `max_conns` connections at once, each closed after `idle_s` without traffic,
and the whole forwarder stops by itself after `lifetime_s` (or when `stop()` is called).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path
from types import TracebackType


class Forwarder:
    def __init__(
        self,
        target: Path,
        *,
        max_conns: int = 32,
        idle_s: float = 30.0,
        lifetime_s: float = 600.0,
    ) -> None:
        self.target = target
        self.idle_s = idle_s
        self.deadline = time.monotonic() + lifetime_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0  # accepted so far
        self._slots = threading.BoundedSemaphore(max_conns)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="forwarder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Forwarder:
        self._acceptor.start()
        return self

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def _accept(self) -> None:
        try:
            while self._running():
                try:
                    client, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not self._slots.acquire(blocking=False):
                    client.close()  # over the bound: refuse rather than queue
                    continue
                self.connections += 1
                t = threading.Thread(target=self._serve, args=(client,), daemon=True)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
                t.start()
        finally:
            self.listener.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
                upstream.settimeout(5.0)
                upstream.connect(str(self.target))
                self._pump(client, upstream)
        except OSError:
            pass
        finally:
            self._slots.release()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        open_ends = {client, upstream}
        last = time.monotonic()
        while open_ends and self._running():
            readable, _, _ = select.select(list(open_ends), [], [], 0.2)
            now = time.monotonic()
            if not readable:
                if now - last > self.idle_s:
                    return
                continue
            last = now
            for s in readable:
                data = s.recv(65536)
                if not data:  # one side finished sending: pass the half-close on
                    open_ends.discard(s)
                    try:
                        peer[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    continue
                peer[s].sendall(data)

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> Forwarder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
