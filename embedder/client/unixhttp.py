"""HTTP/1.1 over a unix stream socket, for the client, the load generator and the launcher.

Standard library only: the load generator imports it and must start fast.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """An http.client connection to a unix socket path (the Host header says localhost)."""

    def __init__(self, path: str | Path, timeout: float | None = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        self.sock = sock  # set before connecting, so that close() releases it on failure
        sock.connect(self.unix_path)
