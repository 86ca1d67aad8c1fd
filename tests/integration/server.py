"""The live service for integration tests: `embedder.tools.launch` plus request helpers."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.client.unixhttp import UnixHTTPConnection
from embedder.tools import launch

ROOT = launch.ROOT
free_port = launch.free_port
# The test suite's own variables (docs/development.md), not the service's: the service would
# warn of them at start.
TEST_SUITE_ONLY = ("EMBEDDER_TEST_MODELS_ROOT", "EMBEDDER_BIG_TESTS")
# The runtime the suite's servers compute on unless a test says: the engine of record, whose
# vectors the in-process engine (`starter_service`) reproduces bit for bit on every CPU. The
# service's default, `auto`, times the runtimes at first start: on a CPU with BF16 units it
# serves FP32 levels in BF16 on OpenVINO (close to them, not equal), elsewhere it may take
# either by a timing. `test_backend_auto` serves the default.
BACKEND = "onnxruntime"


@dataclass
class Server(launch.Gunicorn):
    """The live service plus request helpers: `via` is a socket name (rest.sock, ...) or
    'tcp'."""

    @property
    def socket_dir(self) -> Path:
        return self.sockets

    def request(
        self,
        via: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """`via` is a socket name (rest.sock, ...) or 'tcp'."""
        if via == "tcp":
            assert self.port is not None
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=60
            )
        else:
            conn = UnixHTTPConnection(self.sock(via), timeout=60)
        data = (
            json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        )
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, via: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, raw = self.request(via, method, path, body)
        return status, (json.loads(raw) if raw else None)

    def rpc(self, method: str, params: Any = None, via: str = "rpc.sock") -> Any:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            msg["params"] = params
        return self.json(via, "POST", "/rpc", msg)[1]

    def wait_sockets(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-3000:]}")
            try:
                self.request("rest.sock", "GET", "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("sockets never answered")


def start(
    tmp: Path,
    models_root: Path,
    *,
    catalog: str = "starter",
    workers: int = 2,
    tcp: bool = True,
    extra_env: dict[str, str] | None = None,
    socket_root: Path | None = None,
    backend: str | None = BACKEND,
) -> Server:
    """`catalog` (a built-in's name or a catalog file), `workers` x 1 core each unless
    `extra_env` says otherwise, computing on `backend` (None: the service's default)."""
    if backend is not None:
        extra_env = {"EMBEDDER_BACKEND": backend, **(extra_env or {})}
    g = launch.start(
        tmp,
        models_root,
        catalog=catalog,
        workers=workers,
        threads=1,
        tcp=tcp,
        extra_env=extra_env,
        drop=TEST_SUITE_ONLY,
        socket_root=socket_root,
    )
    return Server(g.proc, g.sockets, g.port, g.log, g.workers, g.env)
