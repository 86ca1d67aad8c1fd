"""Start, watch and stop a real gunicorn of this project for the benchmark.

The server runs exactly as in production (`gunicorn -c gunicorn.conf.py` in the project
root), configured only through the environment: a temporary PATH_SOCKETS, a free loopback
port, the catalog, the models root, the worker layout.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from embedder.bench.wire import UnixConnection

ROOT = Path(__file__).resolve().parents[2]
# Inherited settings that would change what is measured (auth, extra surfaces, logs).
_DROP = (
    "EMBEDDER_API_KEY",
    "EMBEDDER_TCP_EXPOSE",
    "EMBEDDER_ACCESS_LOG",
    "EMBEDDER_CORES",
    "EMBEDDER_MODELS",
    "EMBEDDER_BIND",
    "EMBEDDER_CONTROL_SOCKET",
    "EMBEDDER_MAX_REQUESTS",
    "EMBEDDER_MAX_REQUESTS_JITTER",
)


def project_root() -> Path:
    """Where gunicorn.conf.py and wsgi.py are (an editable install of this repository)."""
    if not (ROOT / "gunicorn.conf.py").is_file() or not (ROOT / "wsgi.py").is_file():
        raise RuntimeError(f"gunicorn.conf.py and wsgi.py not found in {ROOT}")
    return ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    sockets: Path  # $PATH_SOCKETS/hero_embedder_provider
    port: int
    log: Path
    workers: int

    @property
    def tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix:{self.sockets / 'rest.sock'}"

    def health(self) -> dict[str, Any]:
        conn = UnixConnection(str(self.sockets / "rest.sock"), timeout=5)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = json.loads(resp.read() or b"{}")
            return body if isinstance(body, dict) else {}
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Seconds until /health says ok with every worker on the board."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}): {self.tail()}")
            try:
                h = self.health()
                if h.get("status") == "ok" and len(h.get("workers", {})) >= self.workers:
                    return time.monotonic() - began
                if h.get("status") in ("error", "degraded"):
                    raise RuntimeError(f"models failed to load: {h.get('errors')}")
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn not ready in {timeout:.0f}s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        try:
            return sorted(p.pid for p in psutil.Process(self.proc.pid).children())
        except psutil.Error:
            return []

    def cpu_by_worker(self) -> dict[int, float]:
        """User + system CPU seconds of each worker so far."""
        out: dict[int, float] = {}
        for pid in self.worker_pids():
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = float(t.user + t.system)
            except psutil.Error:
                continue
        return out

    def memory(self) -> list[dict[str, Any]]:
        """RSS, PSS and USS (MiB) of the master and of each worker."""
        out: list[dict[str, Any]] = []
        for role, pid in [("master", self.proc.pid)] + [("worker", p) for p in self.worker_pids()]:
            try:
                full = psutil.Process(pid).memory_full_info()
            except psutil.Error:
                continue
            mib = 1024 * 1024
            pss = getattr(full, "pss", None)
            out.append(
                {
                    "role": role,
                    "pid": pid,
                    "rss_mib": full.rss / mib,
                    "pss_mib": pss / mib if pss is not None else None,
                    "uss_mib": full.uss / mib,
                }
            )
        return out

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    tmp: Path,
    *,
    catalog: str,
    models_root: Path,
    models: list[str],
    workers: int,
    threads: int,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """A gunicorn on a temporary socket root and a free loopback port (not yet ready)."""
    root = project_root()
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    sockets_root = tmp / "sockets"
    log = tmp / f"gunicorn-{workers}x{threads}-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(
        {
            "PATH_SOCKETS": str(sockets_root),
            "EMBEDDER_CATALOG": catalog,
            "EMBEDDER_MODELS_ROOT": str(models_root),
            "EMBEDDER_MODELS": ",".join(models),
            "EMBEDDER_BIND": f"127.0.0.1:{port}",
            "EMBEDDER_WORKERS": str(workers),
            "EMBEDDER_THREADS": str(threads),
            "EMBEDDER_GRACEFUL_TIMEOUT": "5",
            "EMBEDDER_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "ORT_DISABLE_TELEMETRY": "1",
            **(extra_env or {}),
        }
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, sockets_root / "hero_embedder_provider", port, log, workers)
