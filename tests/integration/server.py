"""Start and stop a real gunicorn running this project, for integration tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    socket_dir: Path
    port: int | None
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def sock(self, name: str) -> Path:
        return self.socket_dir / name

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

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until /health says ok for every worker (the board lists them all)."""
        workers = int(self.env.get("EMBEDDER_WORKERS", "1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-3000:]}")
            try:
                status, body = self.json("rest.sock", "GET", "/health")
                if (
                    status == 200
                    and body["status"] == "ok"
                    and len(body.get("workers", {})) >= workers
                ):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def wait_sockets(self, timeout: float = 30.0) -> None:
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

    def stop(self, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start(
    tmp: Path,
    models_root: Path,
    *,
    workers: int = 2,
    tcp: bool = True,
    extra_env: dict[str, str] | None = None,
    socket_root: Path | None = None,
) -> Server:
    port = free_port() if tcp else None
    sockets_root = socket_root or (tmp / "sockets")
    log = tmp / f"gunicorn-{time.monotonic_ns()}.log"
    env = {
        **os.environ,
        "PATH_SOCKETS": str(sockets_root),
        "EMBEDDER_CATALOG": "starter",
        "EMBEDDER_MODELS_ROOT": str(models_root),
        "EMBEDDER_BIND": f"127.0.0.1:{port}" if tcp else "",
        "EMBEDDER_WORKERS": str(workers),
        "EMBEDDER_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "ORT_DISABLE_TELEMETRY": "1",
        **(extra_env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, sockets_root / "hero_embedder_provider", port, log, env)
