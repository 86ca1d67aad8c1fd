"""A board where each worker posts its model states, so any worker answers for all of them.

gunicorn spreads requests over workers, and each worker loads its own sessions; without this
`/health` would say "ok" as soon as the answering worker is ready while another still loads.
Each worker writes `<dir>/<pid>.json` atomically on every state change; readers keep only the
files of live processes (a killed worker's file is ignored, then removed by the master).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import psutil


class WorkerBoard:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def publish(self, snapshot: dict[str, Any]) -> None:
        pid = os.getpid()
        tmp = self.dir / f".{pid}.tmp"
        tmp.write_text(json.dumps({"pid": pid, **snapshot}))
        os.replace(tmp, self.dir / f"{pid}.json")

    def read(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for path in self.dir.glob("*.json"):
            try:
                pid = int(path.stem)
                data = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            if psutil.pid_exists(pid):
                out[pid] = data
        return out

    def mark_served(self) -> None:
        """Record that this instance has served: workers started from now on are joining it."""
        (self.dir / "served").touch()

    def has_served(self) -> bool:
        """True once any worker of this master was ready. The board is wiped at each master
        start and survives SIGHUP, so this tells a reload or a replacement from a first start
        even when every old worker has already exited."""
        return (self.dir / "served").exists()

    def remove(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.dir / f"{pid}.json").unlink()
