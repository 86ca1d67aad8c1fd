"""HTTP/1.1 to the service, one kept-alive connection per thread: a unix socket or a TCP URL.

The client's JSON-RPC calls (`api`) and REST calls (`rest`) both go through here; neither
knows the other. A connection the server closed while idle is reopened once, which is safe
because every call the client makes is read-only.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .types import ServiceTimeout, ServiceUnreachable
from .unixhttp import UnixHTTPConnection

SERVICE_DIR = "hero_embedder_provider"  # the service's folder under the socket root


def default_socket(name: str = "rpc.sock", env: Mapping[str, str] | None = None) -> Path:
    """A socket of the service under $PATH_SOCKETS, else ~/hero/var/sockets (the hero layout),
    as the service itself places them. Only the socket root matters to a client: the server's
    other settings, valid or not, are none of its business."""
    env = os.environ if env is None else env
    raw = env.get("PATH_SOCKETS", "").strip()
    root = Path(raw).expanduser() if raw else Path.home() / "hero" / "var" / "sockets"
    return root / SERVICE_DIR / name


class Transport:
    """Requests to one address; safe to share between threads (each has its own connection)."""

    def __init__(
        self, socket_path: Path | None, url: str | None, timeout: float, api_key: str | None
    ) -> None:
        self.socket_path, self.url = socket_path, url
        self.timeout, self.api_key = timeout, api_key
        self.address = url or str(socket_path)
        self._local = threading.local()

    def send(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP request on this thread's connection: (status, body)."""
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        path = (urlsplit(self.url).path.rstrip("/") if self.url else "") + path
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, body
            except TimeoutError as e:
                self.close()
                raise ServiceTimeout(f"no answer from {self.address} in {self.timeout}s") from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: reopen once
                raise ServiceUnreachable(f"{self.address} closed the connection: {e}") from e
            except OSError as e:
                self.close()
                raise ServiceUnreachable(self._unreachable(e)) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def http_message(self, status: int, body: Any, raw: bytes) -> str:
        """What an HTTP error without a JSON-RPC body says, with a hint where one helps."""
        detail = raw[:300].decode(errors="replace")
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = str(body["error"].get("message", detail))
        elif isinstance(body, dict) and "description" in body:
            detail = str(body["description"])
        hint = ""
        if status == 404 and self.url and "EMBEDDER_TCP_EXPOSE" not in detail:
            hint = " (JSON-RPC is served on TCP only when the server sets EMBEDDER_TCP_EXPOSE=rpc)"
        return f"HTTP {status} from {self.address}: {detail}{hint}"

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self.socket_path is not None:
            conn = UnixHTTPConnection(self.socket_path, self.timeout)
        else:
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must look like http://host:port, got {self.url!r}")
            https = parts.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def _unreachable(self, e: OSError) -> str:
        why = e.strerror or str(e)
        if self.socket_path is None:
            return f"cannot reach hero_embedder_provider at {self.url}: {why}"
        return (
            f"cannot reach hero_embedder_provider on {self.socket_path}: {why}. Is the service "
            "running, with the same PATH_SOCKETS (and as a user allowed into that directory)?"
        )
