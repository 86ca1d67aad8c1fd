"""Start, watch and stop a real gunicorn of this project: the one launcher behind the benchmark,
the soak and the integration tests.

The service runs as in production (`gunicorn -c gunicorn.conf.py` in the checkout), configured
only through the environment: a temporary PATH_SOCKETS, the catalog, the models root, the
worker layout, and a free loopback port (or no TCP at all). Offline: it never reaches the Hub.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from embedder.client.unixhttp import UnixHTTPConnection

ROOT = Path(__file__).resolve().parents[2]  # the checkout: wsgi.py and gunicorn.conf.py


def source_root() -> Path:
    """Where gunicorn.conf.py and wsgi.py are (an editable install of this repository)."""
    if not (ROOT / "gunicorn.conf.py").is_file() or not (ROOT / "wsgi.py").is_file():
        raise RuntimeError(f"gunicorn.conf.py and wsgi.py not found in {ROOT}")
    return ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    sockets: Path  # $PATH_SOCKETS/hero_embedder_provider
    port: int | None  # None: no TCP listener
    log: Path
    workers: int
    env: dict[str, str] = field(default_factory=dict)

    def sock(self, name: str) -> Path:
        return self.sockets / name

    def get_json(self, path: str, sock: str = "rest.sock", timeout: float = 10.0) -> Any:
        """(status, decoded body) of a GET on one of the unix sockets, on a fresh connection."""
        conn = UnixHTTPConnection(self.sock(sock), timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Seconds until /health says ok with every worker on the board; fails fast when
        gunicorn exits or a model fails to load."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                status, body = self.get_json("/health", timeout=5)
            except (OSError, ValueError, http.client.HTTPException):
                status, body = 0, None
            if status == 200 and isinstance(body, dict):
                if body.get("status") == "ok" and len(body.get("workers", {})) >= self.workers:
                    return time.monotonic() - began
                if body.get("status") in ("error", "degraded"):
                    raise RuntimeError(f"models failed to load: {body.get('errors')}")
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn not ready in {timeout:.0f} s:\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        try:
            return sorted(p.pid for p in psutil.Process(self.proc.pid).children())
        except psutil.Error:
            return []

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM (a graceful stop), SIGKILL after `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start(
    workdir: Path,
    models_root: Path,
    *,
    catalog: str = "starter",
    workers: int = 2,
    threads: int = 1,
    tcp: bool = True,
    models: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    drop: Iterable[str] = (),
    socket_root: Path | None = None,
    new_session: bool = False,
    checkout: Path | None = None,
) -> Gunicorn:
    """A gunicorn on `socket_root` (default `workdir/sockets`) and, with `tcp`, a free loopback
    port; returned at once (see `Gunicorn.wait_ready`). Inherited variables named in `drop` are
    removed first; `models` empty serves the whole catalog. `checkout`: another checkout of
    this project whose code the server runs (first on its PYTHONPATH), to compare two."""
    root = checkout or source_root()
    port = free_port() if tcp else None
    sockets_root = socket_root or (workdir / "sockets")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"gunicorn-{workers}x{threads}-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.pop("EMBEDDER_MODELS", None)
    env.update(
        {
            "PATH_SOCKETS": str(sockets_root),
            "EMBEDDER_CATALOG": catalog,
            "EMBEDDER_MODELS_ROOT": str(models_root),
            "EMBEDDER_BIND": f"127.0.0.1:{port}" if port else "",
            "EMBEDDER_WORKERS": str(workers),
            "EMBEDDER_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1",
            **({"EMBEDDER_MODELS": ",".join(models)} if models else {}),
            **(extra_env or {}),
        }
    )
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    workers_now = int(env["EMBEDDER_WORKERS"])
    return Gunicorn(proc, sockets_root / "hero_embedder_provider", port, log, workers_now, env)
