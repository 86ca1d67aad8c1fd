"""The benchmark's gunicorn (`embedder.tools.launch`), with what the report reads of it: the load
generator's targets, CPU per worker and memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from embedder.tools import launch

# Inherited settings that would change what is measured (auth, extra surfaces, and
# gunicorn's own options given outside the service's settings).
_DROP = (
    "EMBEDDER_API_KEY",
    "EMBEDDER_TCP_EXPOSE",
    "EMBEDDER_CORES",
    "EMBEDDER_MODELS",
    "EMBEDDER_BIND",
    "GUNICORN_CMD_ARGS",
)


@dataclass
class Server(launch.Gunicorn):
    @property
    def tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix:{self.sockets / 'rest.sock'}"

    @property
    def rpc(self) -> str:
        return f"unix:{self.sockets / 'rpc.sock'}"

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


def start(
    tmp: Path,
    *,
    catalog: str,
    models_root: Path,
    models: list[str],
    workers: int,
    threads: int,
    extra_env: dict[str, str] | None = None,
    checkout: Path | None = None,
) -> Server:
    """A gunicorn on a temporary socket root and a free loopback port (not yet ready)."""
    g = launch.start(
        tmp,
        models_root,
        catalog=catalog,
        workers=workers,
        threads=threads,
        models=models,
        extra_env={"EMBEDDER_GRACEFUL_TIMEOUT": "5", "EMBEDDER_LOG_LEVEL": "warning"}
        | (extra_env or {}),
        drop=_DROP,
        new_session=True,
        checkout=checkout,
    )
    return Server(g.proc, g.sockets, g.port, g.log, g.workers, g.env)
